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

import dataclasses
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from steer_away.models import LanguageModel
from steer_away.server.errors import APIError, error_response
from steer_away.server.routes import admin, chat, feedback, health
from steer_away.server.routes.auth import require_key
from steer_away.server.settings import ServerSettings
from steer_away.server.state import ServerState


def create_app(lm: LanguageModel, *, profiles: str | None = None, vectors: str | None = None,
               categories: str | None = None, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    state = ServerState.start(lm, settings, profiles, vectors, categories)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.engine.stop()
        if state.feedback is not None:
            state.feedback.close()

    # With an API key, the schema is served behind it and there is no /docs page (a browser cannot send the key).
    keyed = settings.api_key is not None
    app = FastAPI(title="steer-away", version="0.1.0", lifespan=lifespan, openapi_url=None if keyed else "/openapi.json",
                  docs_url=None if keyed else "/docs", redoc_url=None if keyed else "/redoc")
    _hide_query_strings_in_access_log()
    app.state.server = state
    app.state.engine, app.state.served, app.state.settings = state.engine, state.served, settings
    app.add_exception_handler(APIError, _api_error)  # only ours: anything else is a 500 from the framework
    if keyed:
        app.add_api_route("/openapi.json", _keyed_openapi, include_in_schema=False, dependencies=[Depends(require_key)])
    for router in (health.router, admin.router, chat.router, feedback.router):
        app.include_router(router)
    return app


async def _api_error(_request: Request, err: Exception) -> Response:
    assert isinstance(err, APIError)
    return error_response(err)


async def _keyed_openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


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
