"""The HTTP API's vocabulary: settings, request bodies, errors, and one validated job per request."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from steer_away.errors import InputError
from steer_away.steering.base import RowOverrideError, RowSteering, SteeringMethod
from steer_away.steering.registry import get_method

GREEDY_BELOW = 1e-5  # temperatures under this decode greedily, as vLLM's sampler treats them


@dataclass
class ServerSettings:
    model_name: str = "steer-away"
    default_method: str | None = None  # None: a per-user vector method when vectors are given, else the baseline
    api_key: str | None = None
    max_batch: int = 8
    batch_window_s: float = 0.02  # with nothing running, how long the worker waits for company for the first request
    scheduler: str = "continuous"  # when waiting requests join: "continuous" (any step) or "static" (an emptied batch)
    max_queue: int = 64
    max_tokens_limit: int = 512
    max_messages: int = 64
    max_request_bytes: int = 64_000
    default_max_tokens: int = 128
    max_prompt_tokens: int = 2048  # and never more than the model's context less max_tokens and steering prompts
    admin_without_key: bool = False  # /admin/reload with no --api-key: only when listening on loopback
    stall_after_s: float = 120.0  # /health reports the worker stalled after this long without a decoding step

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_tokens_limit", "max_messages", "max_request_bytes",
                     "default_max_tokens", "max_prompt_tokens"):
            if getattr(self, name) < 1:  # 0 would accept requests that can never run
                raise InputError(f"server setting {name} must be at least 1, got {getattr(self, name)}")


class SteeringOptions(BaseModel):
    """The request's `steering` object: a method, its strength α, and any per-row overrides the
    method declares (the logit methods: "category"), passed on to the method to read and check."""

    model_config = ConfigDict(extra="allow")

    method: str | None = None  # a registered method name; checked against what this server built
    alpha: float | None = None

    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


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

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


@dataclass
class Job:
    messages: list[dict[str, str]]
    method: str
    row: RowSteering
    max_tokens: int
    sampling: tuple[bool, float, float]  # do_sample, temperature, top_p
    seed: int | None
    stream: asyncio.Queue[str | None] | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    prompt_tokens: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)  # set when the client has left
    answered: bool = False  # the worker has sent the result (set by the worker thread only)
    streamed: bool = False  # the worker has sent part of the text to the stream


SEED_LIMIT = 2**63  # torch generators take seeds below this
STEERING_PROMPT_RESERVE = 256  # tokens kept free for the expert / anti-expert system prompts (a quarter of a tiny context)


def make_job(req: ChatRequest, settings: ServerSettings, available: dict[str, str | None], default_method: str,
             methods: Mapping[str, SteeringMethod], count_tokens: Callable[[list[dict[str, str]]], int],
             context: int) -> Job:
    """Validate a request against the limits and the served methods; `available` maps each method
    name to None (served) or the reason it is not, `methods` holds the served ones (they check the
    request's per-row overrides); `count_tokens` counts a conversation's prompt tokens and `context`
    is the model's context length."""
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
        shown = max_tokens if abs(max_tokens) < 10**12 else f"a {'negative ' if max_tokens < 0 else ''}number of over 12 digits"
        raise APIError(400, f"max_tokens must be in 1-{settings.max_tokens_limit}, got {shown}", param="max_tokens")
    steering = req.steering or SteeringOptions()
    method = steering.method or default_method
    if method not in available:
        raise APIError(400, f"unknown steering method '{method}' (have {sorted(available)})",
                       param="steering.method")
    if available[method] is not None:
        raise APIError(400, f"steering method '{method}' is not available on this server: {available[method]}",
                       param="steering.method")
    alpha = steering.alpha
    try:
        get_method(method).args.check_row_strength(alpha)
    except ValueError as err:
        raise APIError(400, f"steering.{err}", param="steering.alpha") from None
    if method not in methods:  # a reload took it away since `available` was read
        raise APIError(400, f"steering method '{method}' is not available on this server: it was reloaded",
                       param="steering.method")
    try:
        overrides = methods[method].read_overrides(steering.overrides())
    except RowOverrideError as err:
        raise APIError(400, str(err), param=f"steering.{err.key}") from None
    temperature = 0.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    if not math.isfinite(temperature) or temperature < 0 or temperature > 100:
        raise APIError(400, f"temperature must be a finite number in 0-100, got {temperature}", param="temperature")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise APIError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p")
    if req.seed is not None and not 0 <= req.seed < SEED_LIMIT:
        raise APIError(400, f"seed must be in 0-{SEED_LIMIT - 1}, got {req.seed}", param="seed")
    messages = [m.model_dump() for m in req.messages]
    prompt_tokens = count_tokens(messages)
    reserve = min(STEERING_PROMPT_RESERVE, context // 4)
    limit = min(settings.max_prompt_tokens, context - max_tokens - reserve)
    if prompt_tokens > limit:
        raise APIError(400, f"the prompt is {prompt_tokens} tokens; the limit is {limit} (the server's "
                            f"max_prompt_tokens {settings.max_prompt_tokens}, or the model's context {context} less "
                            f"max_tokens {max_tokens} and {reserve} for steering prompts)",
                       param="messages")
    do_sample = temperature >= GREEDY_BELOW  # a smaller temperature is greedy (its scores would overflow)
    loop = asyncio.get_running_loop()
    return Job(messages=messages, method=method,
               row=RowSteering(user_id=req.user, alpha=alpha, overrides=overrides), max_tokens=max_tokens,
               sampling=(do_sample, temperature if do_sample else 1.0, top_p), seed=req.seed,
               stream=asyncio.Queue() if req.stream else None, loop=loop, future=loop.create_future(),
               prompt_tokens=prompt_tokens)
