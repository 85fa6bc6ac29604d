"""An OpenAI-compatible chat server where each request is steered for its own user.

`POST /v1/chat/completions` takes the usual request; its `user` field picks the user's profile and
vector, and an optional `steering` object ({"method", "alpha", "category"}, sent by the OpenAI
client as `extra_body`) overrides them. Unknown users get the population default: the population
vector for CAA and the default category for logit steering.

Requests that arrive together are decoded as one batch (each row with its own user's steering) by
a single worker thread that owns the model (engine.py). The queue is bounded (429 when full); a
request that fails is retried alone so it cannot take others in its batch down with it; profiles
and vectors reload on SIGHUP or `POST /admin/reload` between batches, without dropping requests.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from steer_away.models import LanguageModel
from steer_away.server.api import APIError, ChatRequest, ServerSettings, make_job
from steer_away.server.engine import BatchingEngine, ServedMethods


def create_app(lm: LanguageModel, *, profiles: str | None = None, vectors: str | None = None,
               categories: str | None = None, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    served = ServedMethods(lm, profiles, vectors, categories, settings.default_method)
    engine = BatchingEngine(lm, served, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.stop()

    app = FastAPI(title="steer-away", version="0.1.0", lifespan=lifespan)
    app.state.engine, app.state.served, app.state.settings = engine, served, settings

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
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": engine.waiting(), "batches": engine.batches_run,
                "methods": sorted(served.methods), "default_method": served.default,
                "unavailable": served.unavailable, "users": len(served.profiles), "loaded_at": served.loaded_at}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "steer-away", "root": lm.model_id}]}

    @app.post("/admin/reload")
    async def reload(request: Request) -> dict[str, Any]:
        check_auth(request)
        try:
            await asyncio.to_thread(served.reload)
        except (OSError, ValueError) as err:
            raise APIError(400, f"reload failed, keeping the previous profiles and vectors: {err}") from err
        return {"status": "reloaded", "users": len(served.profiles), "loaded_at": served.loaded_at}

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
        job = make_job(req, settings, served.availability(), served.default, served.categories)
        engine.submit(job)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        info = {"method": job.method, "user": req.user, "alpha": job.row.alpha, "category": job.row.category}
        if job.stream is None:
            result = await job.future
            return {"id": rid, "object": "chat.completion", "created": created, "model": settings.model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                                 "finish_reason": result["finish_reason"]}],
                    "usage": {"prompt_tokens": result["prompt_tokens"],
                              "completion_tokens": result["completion_tokens"],
                              "total_tokens": result["prompt_tokens"] + result["completion_tokens"]},
                    "steering": info}
        stream = job.stream

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, str], reason: str | None = None) -> str:
                return "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                              "model": settings.model_name, "choices": [
                                                  {"index": 0, "delta": delta, "finish_reason": reason}]}) + "\n\n"

            yield chunk({"role": "assistant", "content": ""})
            while True:
                piece = await stream.get()
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


def serve(lm: LanguageModel, host: str, port: int, **kwargs: Any) -> None:
    """Run under uvicorn; SIGHUP reloads profiles and vectors."""
    import uvicorn

    app = create_app(lm, **kwargs)

    def on_hup(_signum: int, _frame: object) -> None:
        try:
            app.state.served.reload()
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
