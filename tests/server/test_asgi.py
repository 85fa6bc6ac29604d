"""A request run through an ASGI app in-process (how a Ray Serve replica answers the ingress)."""

import asyncio
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from steer_away.server.asgi import Forwarded, call_app

seen: dict[str, object] = {}


async def echo(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"got": body, "key": request.headers.get("authorization"), "q": request.url.query},
                        status_code=201)


async def stream(_request: Request) -> StreamingResponse:
    async def events():
        try:
            for i in range(1000):
                seen["sent"] = i
                yield f"data: {i}\n\n"
                await asyncio.sleep(0.001)
        finally:
            seen["ended"] = True

    return StreamingResponse(events(), media_type="text/event-stream")


async def boom(_request: Request) -> JSONResponse:
    raise RuntimeError("a bug")


APP = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/stream", stream), Route("/boom", boom)])


def collect(request: Forwarded, limit: int | None = None):
    async def run():
        parts = []
        answer = call_app(APP, request)
        async for part in answer:
            parts.append(part)
            if limit is not None and len(parts) >= limit:
                break
        await answer.aclose()  # what Ray Serve does when the ingress's client leaves
        return parts
    return asyncio.run(run())


def test_a_request_comes_back_with_its_status_headers_and_body():
    parts = collect(Forwarded("POST", "/echo", b"x=1", ((b"authorization", b"Bearer k"),
                                                        (b"content-type", b"application/json")), b'{"a": 1}'))
    head, body = parts[0], b"".join(p.body for p in parts[1:])
    assert head.status == 201 and (b"content-type", b"application/json") in head.headers
    assert json.loads(body) == {"got": {"a": 1}, "key": "Bearer k", "q": "x=1"}
    assert parts[-1].last and not any(p.last for p in parts[:-1])


def test_a_stream_comes_piece_by_piece_and_leaving_it_disconnects_the_app():
    seen.clear()
    parts = collect(Forwarded("GET", "/stream"), limit=4)
    assert [p.body for p in parts[1:]] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert seen.get("ended") and seen["sent"] < 100  # the app saw the client leave, and stopped


def test_an_app_that_raises_gives_a_500_not_an_exception():
    parts = collect(Forwarded("GET", "/boom"))
    assert parts[0].status == 500 and parts[-1].last
