"""The ingress of `steer-away serve --replicas N`: one OpenAI-compatible endpoint before N engine replicas.

A chat request goes to its user's replica on the ring (routing.py), or the next one when that one is
full or down. A replica that fails before any byte of its answer reached the ingress costs nothing:
the request goes to the next replica. One that fails mid-answer ends the answer with a clear error
(an `error` event in a stream, a 502 otherwise); the replica is marked down and skipped until Ray has
replaced it. `/health` asks every replica; `/admin/*` goes to all of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from steer_away.server.asgi import Forwarded, Part
from steer_away.server.routing import UserRing, choose

log = logging.getLogger(__name__)

REPLICA_HEADER = "x-steer-away-replica"  # which replica answered: clients and tests can count
DOWN_FOR_S = 15.0  # a failed replica is skipped this long, then probed before it gets requests again
PROBE_TIMEOUT_S = 2.0
HEALTH_TIMEOUT_S = 5.0


def user_of(body: bytes) -> str | None:
    """The request's `user` (None: no JSON object, or no user: any replica may answer)."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    user = value.get("user") if isinstance(value, dict) else None
    return user if isinstance(user, str) else None


def _error(status: int, message: str, kind: str = "server_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _replica_failed(err: BaseException) -> bool:
    """A failure of the replica itself (process gone, unreachable), not an answer it gave."""
    import ray

    return isinstance(err, (ray.exceptions.RayError, ConnectionError))


class UserRouter:
    def __init__(self, engines: list[Any], capacity: int) -> None:
        self.engines = engines
        self.ring = UserRing(len(engines))
        self.capacity = capacity
        self.in_flight = [0] * len(engines)
        self.down_until = [0.0] * len(engines)

    async def __call__(self, request: Request) -> Response:
        forwarded = Forwarded(request.method, request.url.path, request.url.query.encode(),
                              tuple(request.headers.raw), await request.body())
        if forwarded.path == "/health":
            return await self.health()
        if forwarded.path.startswith("/admin/"):
            return await self._to_every_replica(forwarded)
        user = user_of(forwarded.body)
        order = self.ring.order(user) if user is not None else sorted(range(len(self.engines)),
                                                                       key=lambda r: self.in_flight[r])
        return await self._to_user(forwarded, order)

    async def _down(self) -> set[int]:
        """Replicas to skip: failed lately, or failed before and not answering a probe yet."""
        now = time.monotonic()
        down = {r for r, until in enumerate(self.down_until) if until > now}
        for r, until in enumerate(self.down_until):
            if until and until <= now:
                try:
                    await asyncio.wait_for(self.engines[r].pid.remote(), PROBE_TIMEOUT_S)
                    self.down_until[r] = 0.0
                except Exception:
                    self.down_until[r] = now + DOWN_FOR_S
                    down.add(r)
        return down

    async def _to_user(self, forwarded: Forwarded, order: list[int]) -> Response:
        tried: set[int] = set()
        while True:
            replica = choose(order, self.in_flight, self.capacity, (await self._down()) | tried)
            if replica is None:
                return _error(503, "no replica is up to answer (they are being replaced; retry shortly)")
            tried.add(replica)
            stream = self.engines[replica].options(stream=True).forward.remote(forwarded)
            self.in_flight[replica] += 1
            try:
                head, first = await _opening(stream)
            except Exception as err:
                self.in_flight[replica] -= 1
                if not _replica_failed(err):
                    raise
                self._mark_down(replica, err, "before answering; trying the next replica")
                continue
            return self._respond(replica, head, first, stream)

    def _mark_down(self, replica: int, err: BaseException, what: str) -> None:
        self.down_until[replica] = time.monotonic() + DOWN_FOR_S
        log.warning("replica %d failed %s (%s)", replica, what, type(err).__name__)

    def _respond(self, replica: int, head: Part, first: list[Part], stream: Any) -> Response:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers if k.lower() != b"content-length"}
        headers[REPLICA_HEADER] = str(replica)
        if first and first[-1].last:  # the whole answer is here
            self.in_flight[replica] -= 1
            return Response(b"".join(p.body for p in first), status_code=head.status, headers=headers)
        streamed = headers.get("content-type", "").startswith("text/event-stream")

        async def body() -> AsyncIterator[bytes]:
            try:
                for part in first:
                    yield part.body
                async for part in stream:
                    yield part.body
            except Exception as err:
                if not _replica_failed(err):
                    raise
                self._mark_down(replica, err, "mid-answer; the answer ends with an error")
                message = "the replica answering this request failed mid-answer; send the request again"
                if streamed:
                    yield ("data: " + json.dumps({"error": {"message": message, "type": "server_error",
                                                            "code": 502}}) + "\n\n").encode()
            finally:
                self.in_flight[replica] -= 1

        return StreamingResponse(body(), status_code=head.status, headers=headers)

    async def _to_every_replica(self, forwarded: Forwarded) -> Response:
        answers = await asyncio.gather(*(_whole(e, forwarded) for e in self.engines), return_exceptions=True)
        replies: list[dict[str, Any]] = []
        status = 200
        for replica, answer in enumerate(answers):
            if isinstance(answer, BaseException):
                replies.append({"replica": replica, "status": 502, "error": type(answer).__name__})
                status = 502
                continue
            head, body = answer
            status = max(status, head.status)
            replies.append({"replica": replica, "status": head.status, "body": _json_or_text(body)})
        return JSONResponse({"replicas": replies}, status_code=status)

    async def health(self) -> JSONResponse:
        """Every replica's own /health, its pid and what the ingress has in flight there."""
        async def one(replica: int) -> dict[str, Any]:
            engine = self.engines[replica]
            try:
                pid = await asyncio.wait_for(engine.pid.remote(), HEALTH_TIMEOUT_S)
                head, body = await asyncio.wait_for(_whole(engine, Forwarded("GET", "/health")), HEALTH_TIMEOUT_S)
            except Exception as err:
                return {"replica": replica, "status": "down", "error": type(err).__name__,
                        "in_flight": self.in_flight[replica]}
            self.down_until[replica] = 0.0  # it answers: back in the rotation now, not at the end of its mark
            return {**_json_or_text(body), "replica": replica, "pid": pid, "in_flight": self.in_flight[replica],
                    "http_status": head.status}

        replicas = await asyncio.gather(*(one(r) for r in range(len(self.engines))))
        ok = sum(r.get("status") in ("ok", "busy") for r in replicas)
        status = "ok" if ok == len(replicas) else "degraded" if ok else "down"
        return JSONResponse({"status": status, "replicas_up": ok, "replicas": replicas},
                            status_code=200 if ok else 503)


async def _opening(stream: Any) -> tuple[Part, list[Part]]:
    """The status part and the body up to its first bytes: until then a failed replica cost the client
    nothing and the request can go elsewhere."""
    head = await stream.__anext__()
    first: list[Part] = []
    async for part in stream:
        first.append(part)
        if part.body or part.last:
            break
    return head, first


async def _whole(engine: Any, forwarded: Forwarded) -> tuple[Part, bytes]:
    parts = [p async for p in engine.options(stream=True).forward.remote(forwarded)]
    return parts[0], b"".join(p.body for p in parts[1:])


def _json_or_text(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {"text": body.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"value": value}
