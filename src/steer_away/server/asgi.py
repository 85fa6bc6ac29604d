"""A request run through our ASGI application in-process, its response handed back piece by piece.

How a Ray Serve replica answers what the ingress forwards: the very app `steer-away serve` runs
(validation, API key, errors, streaming), called without a socket, so the replicas' bodies and
status codes are the single server's by construction, not by a second implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Forwarded:
    """An HTTP request as the ingress received it."""

    method: str
    path: str
    query: bytes = b""
    headers: Headers = ()
    body: bytes = b""


@dataclass(frozen=True)
class Part:
    """A piece of a response: the first carries the status and headers, the rest body bytes;
    `last` marks the end of the body."""

    status: int = 0
    headers: Headers = ()
    body: bytes = b""
    last: bool = False


def _internal_error() -> Part:
    body = json.dumps({"error": {"message": "the replica failed to answer", "type": "server_error",
                                 "code": 500}}).encode()
    return Part(500, ((b"content-type", b"application/json"),), body, last=False)


async def call_app(app: Any, request: Forwarded) -> AsyncIterator[Part]:
    """Run `request` through `app`; stopping the iteration is the client leaving (the app sees
    `http.disconnect`, which cancels a streamed answer's row at its next step)."""
    messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    left = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await messages.put(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
             "scheme": "http", "path": request.path, "raw_path": request.path.encode(), "root_path": "",
             "query_string": request.query, "headers": list(request.headers), "client": ("127.0.0.1", 0),
             "server": ("127.0.0.1", 0)}
    task = asyncio.create_task(app(scope, receive, send))
    task.add_done_callback(lambda _: messages.put_nowait(None))  # the app has returned (or raised)
    started = False
    try:
        while (message := await messages.get()) is not None:
            if message["type"] == "http.response.start":
                started = True
                yield Part(message["status"], tuple((bytes(k), bytes(v)) for k, v in message.get("headers", ())))
            elif message["type"] == "http.response.body":
                more = bool(message.get("more_body", False))
                yield Part(body=bytes(message.get("body", b"")), last=not more)
                if not more:
                    return
        if not started:  # raised before answering: what uvicorn would send
            yield _internal_error()
        yield Part(last=True)
    finally:
        left.set()
        if not task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=5)
        elif not task.cancelled():
            task.exception()  # retrieved: the app's own handlers have logged it
