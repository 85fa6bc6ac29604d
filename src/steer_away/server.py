"""An OpenAI-compatible chat server where each request is steered for its own user.

`POST /v1/chat/completions` takes the usual request; its `user` field picks the user's profile and
vector, and an optional `steering` object ({"method", "alpha", "category"}, sent by the OpenAI
client as `extra_body`) overrides them. Unknown users get the population default: the population
vector for CAA and the `moderate` category for EADS / ACD.

Requests that arrive together are decoded as one batch (each row with its own user's steering) by
a single worker thread that owns the model. The queue is bounded (429 when full); a request that
fails is retried alone so it cannot take others in its batch down with it; profiles and vectors
reload on SIGHUP or `POST /admin/reload` between batches, without dropping requests.
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import secrets
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from steer_away.generation import GenerationConfig, generate
from steer_away.steering.base import RowSteering, SteeringMethod

METHODS = ("none", "caa", "eads", "acd")


@dataclass
class ServerSettings:
    model_name: str = "steer-away"
    default_method: str = "caa"
    api_key: str | None = None
    max_batch: int = 8
    batch_window_s: float = 0.02  # how long the worker waits for more requests to join a batch
    max_queue: int = 64
    max_tokens_limit: int = 512
    max_messages: int = 64
    max_request_bytes: int = 64_000
    alpha_limit: float = 50.0
    default_max_tokens: int = 128


class SteeringOptions(BaseModel):
    method: Literal["none", "caa", "eads", "acd"] | None = None
    alpha: float | None = None
    category: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    user: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    steering: SteeringOptions | None = None


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


@dataclass
class Job:
    messages: list[dict[str, str]]
    method: str
    row: RowSteering
    max_tokens: int
    sampling: tuple[bool, float, float]  # do_sample, temperature, top_p
    seed: int | None
    stream: asyncio.Queue | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future

    def batch_key(self) -> tuple:
        return self.method, self.sampling


class SteeringResources:
    """Profiles and vectors loaded from files; rebuilt whole on reload and swapped in one step."""

    def __init__(self, lm: object, profiles_path: str | None, vectors_path: str | None,
                 categories_path: str | None) -> None:
        self.lm, self.profiles_path, self.vectors_path, self.categories_path = \
            lm, profiles_path, vectors_path, categories_path
        self.methods: dict[str, SteeringMethod | None] = {}
        self.loaded_at = 0.0
        self.reload()

    def reload(self) -> None:
        from steer_away.profiles import load_profiles
        from steer_away.steering.activation import ActivationSteering
        from steer_away.steering.logits import LogitSteering, load_categories
        from steer_away.steering.vectors import load_bank

        profiles = load_profiles(self.profiles_path) if self.profiles_path else {}
        categories = load_categories(self.categories_path)
        methods: dict[str, SteeringMethod | None] = {
            "none": None,
            "eads": LogitSteering("eads", categories, profiles),
            "acd": LogitSteering("acd", categories, profiles),
        }
        if self.vectors_path:
            population, users = load_bank(self.vectors_path, self.lm)
            methods["caa"] = ActivationSteering(users or population, alpha=0.5, default=population, name="caa")
        self.methods = methods  # one assignment: a batch sees the old set or the new, never a mix
        self.profiles = profiles
        self.loaded_at = time.time()


class BatchingEngine:
    """One worker thread owns the model: it drains the queue into compatible batches and decodes them."""

    def __init__(self, lm: object, resources: SteeringResources, settings: ServerSettings) -> None:
        self.lm, self.resources, self.settings = lm, resources, settings
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=settings.max_queue)
        self.batches_run = 0
        self.batch_sizes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="steer-away-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise APIError(429, "server is busy: request queue is full, retry later", "rate_limit_error") from None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _collect(self) -> list[Job]:
        try:
            first = self.queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch, held = [first], []
        deadline = time.perf_counter() + self.settings.batch_window_s
        while len(batch) < self.settings.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                job = self.queue.get(timeout=remaining)
            except queue.Empty:
                break
            (batch if job.batch_key() == first.batch_key() else held).append(job)
        for job in held:  # incompatible jobs go back for the next batch
            self.queue.put(job)
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        try:
            self._decode(batch)
        except Exception:  # noqa: BLE001 - isolate the failing request: rerun each alone
            if len(batch) == 1:
                self._fail(batch[0], APIError(500, "generation failed for this request", "server_error"))
                return
            for job in batch:
                try:
                    self._decode([job])
                except APIError as err:
                    self._fail(job, err)
                except Exception as err:  # noqa: BLE001
                    self._fail(job, APIError(500, f"generation failed: {type(err).__name__}: {err}", "server_error"))

    def _fail(self, job: Job, err: APIError) -> None:
        job.loop.call_soon_threadsafe(_settle, job.future, err)
        if job.stream is not None:
            job.loop.call_soon_threadsafe(job.stream.put_nowait, None)

    def _decode(self, batch: list[Job]) -> None:
        method = self.resources.methods.get(batch[0].method)
        if batch[0].method not in self.resources.methods:
            raise APIError(400, f"steering method '{batch[0].method}' is not available on this server "
                                "(CAA needs --vectors)", param="steering.method")
        do_sample, temperature, top_p = batch[0].sampling
        config = GenerationConfig(max_new_tokens=max(j.max_tokens for j in batch), do_sample=do_sample,
                                  temperature=temperature, top_p=top_p, seed=batch[0].seed)
        tokenizer = self.lm.tokenizer  # type: ignore[attr-defined]
        produced: list[list[int]] = [[] for _ in batch]
        sent: list[str] = ["" for _ in batch]

        def on_step(tokens: list[int], finished: list[bool]) -> None:
            for i, job in enumerate(batch):
                if finished[i] or len(produced[i]) >= job.max_tokens:
                    continue
                produced[i].append(tokens[i])
                if job.stream is not None:
                    text = tokenizer.decode(produced[i], skip_special_tokens=True)
                    if len(text) > len(sent[i]) and not text.endswith("\ufffd"):
                        job.loop.call_soon_threadsafe(job.stream.put_nowait, text[len(sent[i]):])
                        sent[i] = text

        results = generate(self.lm, [j.messages for j in batch], method=method, rows=[j.row for j in batch],
                           config=config, on_step=on_step)
        self.batches_run += 1
        self.batch_sizes.append(len(batch))
        for i, (job, result) in enumerate(zip(batch, results)):
            ids = result.token_ids[: job.max_tokens]
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            # a row that reached its own limit ended on length, even if the batch decoded further
            reason = "length" if len(result.token_ids) >= job.max_tokens else result.finish_reason
            payload = {"text": text, "finish_reason": reason, "prompt_tokens": result.prompt_tokens,
                       "completion_tokens": len(ids)}
            if job.stream is not None:
                final = tokenizer.decode(ids, skip_special_tokens=True)
                if len(final) > len(sent[i]):
                    job.loop.call_soon_threadsafe(job.stream.put_nowait, final[len(sent[i]):])
                job.loop.call_soon_threadsafe(job.stream.put_nowait, None)
            job.loop.call_soon_threadsafe(_settle, job.future, payload)


def _settle(future: asyncio.Future, value: object) -> None:
    if future.done():
        return
    if isinstance(value, Exception):
        future.set_exception(value)
    else:
        future.set_result(value)


def create_app(lm: object, *, profiles: str | None = None, vectors: str | None = None,
               categories: str | None = None, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    if settings.default_method not in METHODS:
        raise ValueError(f"default method must be one of {METHODS}")
    resources = SteeringResources(lm, profiles, vectors, categories)
    if settings.default_method not in resources.methods:
        raise ValueError(f"default method '{settings.default_method}' needs --vectors")
    engine = BatchingEngine(lm, resources, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.stop()

    app = FastAPI(title="steer-away", version="0.1.0", lifespan=lifespan)
    app.state.engine, app.state.resources, app.state.settings = engine, resources, settings

    @app.exception_handler(APIError)
    async def api_error(_request: Request, err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    def check_auth(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(token.encode(), settings.api_key.encode()):
            raise APIError(401, "missing or wrong bearer token", "authentication_error")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "queued": engine.queue.qsize(), "batches": engine.batches_run,
                "methods": sorted(resources.methods), "users": len(resources.profiles),
                "loaded_at": resources.loaded_at}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_auth(request)
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "steer-away", "root": lm.model_id}]}  # type: ignore[attr-defined]

    @app.post("/admin/reload")
    async def reload(request: Request) -> dict:
        check_auth(request)
        try:
            await asyncio.to_thread(resources.reload)
        except (OSError, ValueError) as err:
            raise APIError(400, f"reload failed, keeping the previous profiles and vectors: {err}") from err
        return {"status": "reloaded", "users": len(resources.profiles), "loaded_at": resources.loaded_at}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check_auth(request)
        body = await request.body()
        if len(body) > settings.max_request_bytes:
            raise APIError(413, f"request body is {len(body)} bytes; the limit is {settings.max_request_bytes}")
        try:
            req = ChatRequest.model_validate(json.loads(body))
        except json.JSONDecodeError as err:
            raise APIError(400, f"request body is not valid JSON: {err.msg}") from err
        except ValidationError as err:
            first = err.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            raise APIError(400, f"invalid field '{param}': {first['msg']}", param=param) from err
        job = _make_job(req, settings, resources)
        engine.submit(job)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        info = {"method": job.method, "user": req.user, "alpha": job.row.alpha, "category": job.row.category}
        if not req.stream:
            result = await job.future
            return {"id": rid, "object": "chat.completion", "created": created, "model": settings.model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                                 "finish_reason": result["finish_reason"]}],
                    "usage": {"prompt_tokens": result["prompt_tokens"],
                              "completion_tokens": result["completion_tokens"],
                              "total_tokens": result["prompt_tokens"] + result["completion_tokens"]},
                    "steering": info}

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict, reason: str | None = None) -> str:
                return "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                              "model": settings.model_name, "choices": [
                                                  {"index": 0, "delta": delta, "finish_reason": reason}]}) + "\n\n"

            yield chunk({"role": "assistant", "content": ""})
            while True:
                piece = await job.stream.get()  # type: ignore[union-attr]
                if piece is None:
                    break
                yield chunk({"content": piece})
            try:
                result = await job.future
            except APIError as err:
                yield "data: " + json.dumps(err.body()) + "\n\n"
                return
            yield chunk({}, result["finish_reason"])
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _make_job(req: ChatRequest, settings: ServerSettings, resources: SteeringResources) -> Job:
    if req.model not in (None, settings.model_name, "default"):
        raise APIError(404, f"model '{req.model}' is not served here; use '{settings.model_name}'",
                       param="model")
    if req.n != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    if len(req.messages) > settings.max_messages:
        raise APIError(400, f"{len(req.messages)} messages; the limit is {settings.max_messages}", param="messages")
    max_tokens = next((v for v in (req.max_completion_tokens, req.max_tokens) if v is not None),
                      min(settings.default_max_tokens, settings.max_tokens_limit))
    if not 1 <= max_tokens <= settings.max_tokens_limit:
        raise APIError(400, f"max_tokens must be in 1-{settings.max_tokens_limit}, got {max_tokens}",
                       param="max_tokens")
    steering = req.steering or SteeringOptions()
    method = steering.method or settings.default_method
    if method not in resources.methods:
        raise APIError(400, f"steering method '{method}' is not available (have {sorted(resources.methods)})",
                       param="steering.method")
    alpha = steering.alpha
    if alpha is not None and (not math.isfinite(alpha) or abs(alpha) > settings.alpha_limit):
        raise APIError(400, f"steering.alpha must be finite with |alpha| <= {settings.alpha_limit}, got {alpha}",
                       param="steering.alpha")
    if steering.category is not None:
        logit = resources.methods.get("eads")
        known = sorted(getattr(logit, "categories", {}))
        if steering.category not in known:
            raise APIError(400, f"unknown steering category '{steering.category}' (have {known})",
                           param="steering.category")
    temperature = 0.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    if temperature < 0 or not 0 < top_p <= 1:
        raise APIError(400, "temperature must be >= 0 and top_p in (0, 1]", param="temperature")
    do_sample = temperature > 0
    loop = asyncio.get_running_loop()
    return Job(messages=[m.model_dump() for m in req.messages], method=method,
               row=RowSteering(user_id=req.user, alpha=alpha, category=steering.category), max_tokens=max_tokens,
               sampling=(do_sample, temperature if do_sample else 1.0, top_p), seed=req.seed,
               stream=asyncio.Queue() if req.stream else None, loop=loop, future=loop.create_future())


def serve(lm: object, host: str, port: int, **kwargs: Any) -> None:
    """Run under uvicorn; SIGHUP reloads profiles and vectors."""
    import uvicorn

    app = create_app(lm, **kwargs)

    def on_hup(_signum: int, _frame: object) -> None:
        try:
            app.state.resources.reload()
        except (OSError, ValueError) as err:
            print(f"reload failed, keeping the previous profiles and vectors: {err}", flush=True)

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    uvicorn.run(app, host=host, port=port, log_level="info")


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1") -> tuple[Any, threading.Thread, str]:
    """Start uvicorn on a free loopback port in a daemon thread: (server, thread, base URL).

    For tests, benchmarks and notebooks; stop it with `server.should_exit = True; thread.join()`.
    """
    import socket

    import uvicorn

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError(f"server on {host}:{port} did not start")
        time.sleep(0.05)
    return server, thread, f"http://{host}:{port}"
