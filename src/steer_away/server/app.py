"""An OpenAI-compatible chat server where each request is steered for its own user.

`POST /v1/chat/completions` takes the usual request; its `user` field picks the user's profile and
vector, and an optional `steering` object ({"method", "alpha", "category"}, sent by the OpenAI
client as `extra_body`) overrides them; its keys beyond method and α are the method's own per-row
overrides (the logit methods take "category"), read and checked by the method. Unknown users get
the population default: the population vector for CAA and the default category for logit steering.

Requests are decoded by a single worker thread that owns the model (engine.py), with continuous
batching: each request joins the running batch at the next step and leaves the step it ends, each
row with its own user's steering. The queue is bounded (429 when full); a
request that fails is retried alone so it cannot take others in its batch down with it; profiles
and vectors reload on SIGHUP or `POST /admin/reload` without dropping requests (running ones finish
with the set they started with).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import ipaddress
import json
import logging
import secrets
import signal
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from steer_away import internals
from steer_away.chat import render_chat, token_count
from steer_away.models import LanguageModel
from steer_away.server.api import APIError, Job, ServerSettings, make_job
from steer_away.server.body import parse_chat_request, read_body
from steer_away.server.engine import BatchingEngine
from steer_away.server.methods import ServedMethods

BUSY_AFTER_S = 5.0  # /health says "busy" while one step has run this long (a long prefill), still 200
def create_app(lm: LanguageModel, *, profiles: str | None = None, vectors: str | None = None,
               categories: str | None = None, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    served = ServedMethods(lm, profiles, vectors, categories, settings.default_method)
    engine = BatchingEngine(lm, served, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.stop()

    # With an API key, the schema is served behind it and there is no /docs page (a browser cannot send the key).
    keyed = settings.api_key is not None
    app = FastAPI(title="steer-away", version="0.1.0", lifespan=lifespan, openapi_url=None if keyed else "/openapi.json",
                  docs_url=None if keyed else "/docs", redoc_url=None if keyed else "/redoc")
    _hide_query_strings_in_access_log()
    app.state.engine, app.state.served, app.state.settings = engine, served, settings

    @app.exception_handler(APIError)
    async def api_error(_request: Request, err: APIError) -> Response:
        return _error_response(err)

    def check_auth(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(token.encode(), settings.api_key.encode()):
            raise APIError(401, "missing or wrong bearer token", "authentication_error")

    def check_admin(request: Request) -> None:
        if settings.api_key is None and not settings.admin_without_key:
            raise APIError(403, "admin endpoints need an API key (--api-key) when the server listens beyond loopback",
                           "permission_error")
        check_auth(request)

    context = internals.context_length(lm.model)
    # Request handlers count prompt tokens with their own copy of the tokenizer: a fast tokenizer
    # keeps its padding setting in shared state, and calls from two threads with different padding
    # made the worker's padded batch ragged (found by bench/soak.py).
    counter = copy.deepcopy(lm.tokenizer)

    def count_tokens(messages: list[dict[str, str]]) -> int:
        return token_count(counter, render_chat(counter, messages))

    control_tokens = chat_control_tokens(counter)

    if keyed:
        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(request: Request) -> JSONResponse:
            check_auth(request)
            return JSONResponse(app.openapi())

    @app.get("/health")
    async def health() -> JSONResponse:
        alive, idle, in_step = engine.alive()
        # A step under way is work, not a stall, until it has run longer than any step should; a
        # worker between steps that has not even polled its queue for that long is stuck.
        stalled = not alive or max(in_step, idle if in_step == 0 else 0.0) > settings.stall_after_s
        status = "stalled" if stalled else "busy" if in_step > BUSY_AFTER_S else "ok"
        body = {"status": status, "worker_alive": alive, "seconds_since_progress": round(idle, 1),
                "step_running_s": round(in_step, 1), "queued": engine.waiting(),
                "running": engine.running(), "steps": engine.steps_run, "retried_alone": engine.retried_alone,
                "failed_alone": engine.failed_alone, "cancelled": engine.cancelled_jobs,
                "methods": sorted(served.methods), "default_method": served.default,
                "unavailable": served.unavailable, "users": len(served.profiles),
                "users_on_default_vector": served.on_default, "loaded_at": served.loaded_at}
        return JSONResponse(body, status_code=503 if stalled else 200)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "steer-away", "root": lm.model_id}]}

    @app.post("/admin/reload")
    async def reload(request: Request) -> dict[str, Any]:
        check_admin(request)
        try:
            await asyncio.to_thread(served.reload)
        except Exception as err:  # any bad file: keep serving the previous set
            raise APIError(400, f"reload failed, keeping the previous profiles and vectors: {err}") from err
        return {"status": "reloaded", "users": len(served.profiles), "loaded_at": served.loaded_at}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check_auth(request)
        req = parse_chat_request(await read_body(request, settings.max_request_bytes))
        methods = served.methods
        job = make_job(req, settings, served.availability(), served.default, methods, count_tokens, context,
                       control_tokens)
        engine.submit(job)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        overrides = dataclasses.asdict(job.row.overrides) if job.row.overrides is not None else {}
        info = {"method": job.method, "user": req.user, "alpha": job.row.alpha, **overrides}
        if job.stream is None:
            result = await wait_or_cancel(job, request)
            if result is None:  # the client left; nobody reads this
                return JSONResponse({"error": {"message": "client disconnected"}}, status_code=499)
            return {"id": rid, "object": "chat.completion", "created": created, "model": settings.model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                                 "finish_reason": result["finish_reason"]}],
                    "usage": _usage(result),
                    "steering": info}
        stream = job.stream

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, str] | None, reason: str | None = None,
                      usage: dict[str, int] | None = None) -> str:
                """One event; with include_usage every chunk has a usage (null), and a last one with no choices has it."""
                body: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created,
                                        "model": settings.model_name, "choices": [] if delta is None else [
                                            {"index": 0, "delta": delta, "finish_reason": reason}]}
                if job.include_usage:
                    body["usage"] = usage
                return "data: " + json.dumps(body) + "\n\n"

            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    try:
                        piece = await asyncio.wait_for(stream.get(), timeout=0.25)
                    except TimeoutError:
                        if await request.is_disconnected():
                            return  # finally: cancel the row
                        continue
                    if piece is None:
                        break
                    if await request.is_disconnected():
                        return
                    yield chunk({"content": piece})
                try:
                    result = await job.future
                except APIError as err:
                    yield "data: " + json.dumps(err.body()) + "\n\n"
                    return
                yield chunk({}, result["finish_reason"])
                if job.include_usage:
                    yield chunk(None, usage=_usage(result))
                yield "data: [DONE]\n\n"
            finally:  # also when the client disconnects mid-stream: its row stops at the next step
                job.cancelled.set()

        return _JobStream(job, events(), media_type="text/event-stream")

    return app


def chat_control_tokens(tokenizer: Any) -> list[str]:
    """The special tokens a rendered conversation is made of (those the chat template writes for a
    system, user and assistant turn, those written in the template itself, and the begin / end of
    sequence tokens): text holding one would pose as a turn of its own. Other special tokens (SmolLM2
    has `<filename>`, `<gh_stars>`, …) are ordinary words in a question."""
    template = tokenizer.chat_template
    written = " ".join(template.values()) if isinstance(template, dict) else template or ""
    for turns in (["system", "user", "assistant"], ["user", "assistant"]):
        try:  # a template may build its tokens from pieces ('<|' + role + '|>'): render one conversation
            written += render_chat(tokenizer, [{"role": role, "content": "x"} for role in turns])
            break
        except Exception:  # a template that refuses a system turn
            continue
    ends = {tokenizer.bos_token, tokenizer.eos_token}
    return sorted({t.content for t in tokenizer.added_tokens_decoder.values()
                   if t.special and t.content and (t.content in written or t.content in ends)})


def _usage(result: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(result["prompt_tokens"]), int(result["completion_tokens"])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _error_response(err: APIError) -> Response:
    """An error as JSON with non-ASCII escaped: a message quoting the client's text can always be sent."""
    return Response(json.dumps(err.body()), status_code=err.status, media_type="application/json")


class _QueryStringFilter(logging.Filter):
    """Drops query strings from access-log lines: a key or token put in a URL must not reach the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            path: str = record.args[2]
            record.args = (*record.args[:2], path.split("?", 1)[0] + ("?…" if "?" in path else ""), *record.args[3:])
        return True


def _hide_query_strings_in_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _QueryStringFilter) for f in access.filters):
        access.addFilter(_QueryStringFilter())


class _JobStream(StreamingResponse):
    """A streamed answer that cancels its job however the stream ends: finished, or the client gone
    (a write to a closed connection raises out of the response, and the generator is never resumed)."""

    def __init__(self, job: Job, content: AsyncIterator[str], media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self.job = job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancelled.set()


async def wait_or_cancel(job: Job, request: Request) -> dict[str, Any] | None:
    """The job's result, or None (and the job cancelled) once the client has disconnected."""
    while True:
        done, _ = await asyncio.wait({job.future}, timeout=0.25)
        if done:
            return job.future.result()
        if await request.is_disconnected():
            job.cancelled.set()
            return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(lm: LanguageModel, host: str, port: int, **kwargs: Any) -> None:
    """Run under uvicorn; SIGHUP reloads profiles and vectors (a bad file never stops the server)."""
    import uvicorn  # only when serving: the app itself runs under any ASGI server

    settings = kwargs.pop("settings", None) or ServerSettings()
    if settings.api_key is None and is_loopback(host):
        settings = dataclasses.replace(settings, admin_without_key=True)
    app = create_app(lm, settings=settings, **kwargs)

    def on_hup(_signum: int, _frame: object) -> None:
        try:
            app.state.served.reload()
        except Exception as err:  # a signal handler must never take the server down
            print(f"reload failed, keeping the previous profiles and vectors: {err}", flush=True)

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    uvicorn.run(app, host=host, port=port, log_level="info")


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1") -> tuple[Any, threading.Thread, str]:
    """Start uvicorn on a free loopback port in a daemon thread: (server, thread, base URL).

    For tests, benchmarks and notebooks; stop it with `server.should_exit = True; thread.join()`.
    """
    import uvicorn  # only when serving: the app itself runs under any ASGI server

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
