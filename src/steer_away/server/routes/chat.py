"""POST /v1/chat/completions: a request validated into a job, queued for the worker, answered whole
or streamed as server-sent events; a client that leaves cancels its row at the next step."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from steer_away.server.body import parse_chat_request, read_body
from steer_away.server.errors import APIError
from steer_away.server.jobs import Answer, Channel, Job
from steer_away.server.routes.auth import require_key, require_program
from steer_away.server.state import server_state
from steer_away.server.validate import validate_chat

router = APIRouter()


@dataclasses.dataclass(frozen=True)
class Reply:
    """What every response to one request carries: its id, time, model name and the steering applied."""

    rid: str
    created: int
    model: str
    steering: dict[str, Any]

    def completion(self, answer: Answer) -> dict[str, Any]:
        return {"id": self.rid, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": answer.finish_reason}],
                "usage": answer.usage(), "steering": self.steering}

    def chunk(self, delta: dict[str, str] | None, reason: str | None = None, *, with_usage: bool = False,
              usage: dict[str, int] | None = None) -> str:
        """One event; with include_usage every chunk has a usage (null), and a last one with no choices has it."""
        body: dict[str, Any] = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created,
                                "model": self.model, "choices": [] if delta is None else [
                                    {"index": 0, "delta": delta, "finish_reason": reason}]}
        if with_usage:
            body["usage"] = usage
        return "data: " + json.dumps(body) + "\n\n"


@router.post("/v1/chat/completions", dependencies=[Depends(require_key), Depends(require_program)])
async def chat(request: Request) -> Any:
    state = server_state(request)
    req = parse_chat_request(await read_body(request, state.settings.max_request_bytes))
    call = validate_chat(req, state.view())
    job = Job(call, Channel.open(call.streamed))
    state.engine.submit(job)
    overrides = dataclasses.asdict(call.row.overrides) if call.row.overrides is not None else {}
    reply = Reply(f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), state.settings.model_name,
                  {"method": call.method, "user": call.row.user_id, "alpha": call.row.alpha, **overrides})
    def remember(answer: Answer) -> None:  # for feedback naming this completion by its id
        if state.feedback is not None:
            prompt = next((m["content"] for m in reversed(call.messages) if m["role"] == "user"), "")
            state.feedback.completions.remember(reply.rid, call.row.user_id, prompt, answer.text)

    if not call.streamed:
        answer = await wait_or_cancel(job, request)
        if answer is None:  # the client left; nobody reads this
            return JSONResponse({"error": {"message": "client disconnected"}}, status_code=499)
        remember(answer)
        return reply.completion(answer)
    return JobStream(job, events(job, reply, request, remember), media_type="text/event-stream")


async def events(job: Job, reply: Reply, request: Request, finished: Callable[[Answer], None]) -> AsyncIterator[str]:
    """The streamed answer as server-sent events, ending with [DONE] (or an error event)."""
    stream, with_usage = job.channel.stream, job.call.include_usage
    assert stream is not None
    try:
        yield reply.chunk({"role": "assistant", "content": ""}, with_usage=with_usage)
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
            yield reply.chunk({"content": piece}, with_usage=with_usage)
        try:
            answer = await job.channel.future
        except APIError as err:
            yield "data: " + json.dumps(err.body()) + "\n\n"
            return
        finished(answer)
        yield reply.chunk({}, answer.finish_reason, with_usage=with_usage)
        if with_usage:
            yield reply.chunk(None, with_usage=True, usage=answer.usage())
        yield "data: [DONE]\n\n"
    finally:  # also when the client disconnects mid-stream: its row stops at the next step
        job.channel.cancelled.set()


class JobStream(StreamingResponse):
    """A streamed answer that cancels its job however the stream ends: finished, or the client gone
    (a write to a closed connection raises out of the response, and the generator is never resumed)."""

    def __init__(self, job: Job, content: AsyncIterator[str], media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self.job = job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.channel.cancelled.set()


async def wait_or_cancel(job: Job, request: Request) -> Answer | None:
    """The job's answer, or None (and the job cancelled) once the client has disconnected."""
    future = job.channel.future
    while True:
        done, _ = await asyncio.wait({future}, timeout=0.25)
        if done:
            return future.result()
        if await request.is_disconnected():
            job.channel.cancelled.set()
            return None
