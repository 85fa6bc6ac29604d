"""A chat request on its way through the server, in three parts kept apart: what was asked
(`ChatCall`, validated and immutable), how its answer travels back (`Channel`: the request's event
loop, future, stream queue and cancel flag), and the worker's own bookkeeping (`WorkerState`).
The answer itself is typed (`Answer`) from the worker to the response."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from steer_away.decoding import GenerationConfig
from steer_away.server.errors import APIError
from steer_away.steering.framework.method import RowSteering, SteeringMethod


@dataclass(frozen=True)
class ChatCall:
    """A validated request: everything the worker needs to decode it."""

    messages: list[dict[str, str]]
    method: str  # a served method's name
    row: RowSteering
    config: GenerationConfig  # its seed is the client's, if any
    prompt_tokens: int
    streamed: bool = False
    include_usage: bool = False  # a streamed answer ends with a usage chunk


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


@dataclass
class Channel:
    """Between the request's event loop and the worker thread: every call from the worker is thread-safe."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Answer]
    stream: asyncio.Queue[str | None] | None  # streamed text, None at the end
    cancelled: threading.Event = field(default_factory=threading.Event)  # set when the client has left

    @classmethod
    def open(cls, streamed: bool) -> Channel:
        """A channel on the running event loop (call from a request handler)."""
        loop = asyncio.get_running_loop()
        return cls(loop, loop.create_future(), asyncio.Queue() if streamed else None)

    def send(self, text: str | None) -> None:
        """More streamed text (None: no more)."""
        if self.stream is not None:
            self.loop.call_soon_threadsafe(self.stream.put_nowait, text)

    def settle(self, outcome: Answer | APIError) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, outcome)


@dataclass
class WorkerState:
    """Written by the worker thread only."""

    answered: bool = False  # the result has been sent
    bound: SteeringMethod | None = None  # the served method, bound when first admitted (a rerun keeps it)
    seed: int | None = None  # the client's, or one drawn for a sampled request (a rerun draws the same text)
    sent: str = ""  # the text streamed so far (a rerun must repeat it before it may send more)


@dataclass
class Job:
    call: ChatCall
    channel: Channel
    state: WorkerState = field(default_factory=WorkerState)


def _settle(future: asyncio.Future[Answer], outcome: Answer | APIError) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
