"""The HTTP API's vocabulary: settings, request bodies, errors, and one validated job per request."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from steer_away.decoding.runner import MIN_CHUNK_COLUMNS
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
    prefill_chunk: int | None = 512  # prompt tokens prefilled per step beside the running decodes; None: whole prompts

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_tokens_limit", "max_messages", "max_request_bytes",
                     "default_max_tokens", "max_prompt_tokens"):
            if getattr(self, name) < 1:  # 0 would accept requests that can never run
                raise InputError(f"server setting {name} must be at least 1, got {getattr(self, name)}")
        if self.prefill_chunk is not None and self.prefill_chunk < MIN_CHUNK_COLUMNS:
            raise InputError(f"server setting prefill_chunk must be at least {MIN_CHUNK_COLUMNS} tokens (or off), "
                             f"got {self.prefill_chunk}")


class SteeringOptions(BaseModel):
    """The request's `steering` object: a method, its strength α, and any per-row overrides the
    method declares (the logit methods: "category"), passed on to the method to read and check
    (a key the method does not take is refused there, with its name)."""

    model_config = ConfigDict(extra="allow")

    method: StrictStr | None = None  # a registered method name; checked against what this server built
    alpha: StrictFloat | None = None

    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: StrictStr  # OpenAI's list of text parts is joined into one text before this is built
    name: StrictStr | None = None  # accepted as OpenAI does; chat templates have no place for it
    # What OpenAI's SDK writes into an assistant message it returns, sent back with the history:
    # accepted empty, refused otherwise (we never made a tool call, refusal or audio).
    refusal: None = None
    tool_calls: list[None] | None = Field(default=None, max_length=0)
    function_call: None = None
    audio: None = None
    annotations: list[None] | None = Field(default=None, max_length=0)

    @model_validator(mode="before")
    @classmethod
    def _assistant_content_may_be_null(cls, raw: Any) -> Any:
        """An assistant turn sent back by an OpenAI client may have `content: null` (it made no text)."""
        if isinstance(raw, dict) and raw.get("role") == "assistant" and raw.get("content") is None:
            return {**raw, "content": ""}
        return raw

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, content: Any) -> Any:
        """OpenAI clients may send content as parts, [{"type": "text", "text": ...}, ...]: their texts
        are joined with newlines (as vLLM does); any other kind of part is refused by name."""
        if not isinstance(content, list):
            return content
        texts = []
        for i, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str) or set(part) - {"type", "text"}:
                raise ValueError(f"content part {i} must be {{\"type\": \"text\", \"text\": \"...\"}}"
                                 + (f"; parts of type {kind!r} are not taken by this text-only server"
                                    if isinstance(kind, str) and kind != "text" else ""))
            texts.append(part["text"])
        return "\n".join(texts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False  # a last chunk with the usage and no choices, as OpenAI sends it


NOT_SUPPORTED = {  # OpenAI fields this server refuses unless they ask for nothing: (the neutral values, why)
    "tools": ((None, []), "this server does not call tools"),
    "tool_choice": ((None, "none"), "this server does not call tools"),
    "functions": ((None, []), "this server does not call functions"),
    "function_call": ((None, "none"), "this server does not call functions"),
    "parallel_tool_calls": ((None, False), "this server does not call tools"),
    "response_format": ((None, {"type": "text"}), "this server answers in plain text only"),
    "logprobs": ((None, False), "this server does not return log-probabilities"),
    "top_logprobs": ((None, 0), "this server does not return log-probabilities"),
    "logit_bias": ((None, {}), "this server does not take logit biases (steer with `steering`)"),
    "presence_penalty": ((None, 0, 0.0), "this server does not apply presence penalties"),
    "frequency_penalty": ((None, 0, 0.0), "this server does not apply frequency penalties"),
}


class ChatRequest(BaseModel):
    """OpenAI's chat request. Unknown fields are refused with their name (a misspelt option must not
    pass silently); OpenAI fields we do not implement are accepted only with their neutral values."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    user: StrictStr | None = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    temperature: StrictFloat | None = None
    top_p: StrictFloat | None = None
    seed: StrictInt | None = None
    n: StrictInt = 1
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    steering: SteeringOptions | None = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None

    def stop_texts(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(stop for stop in stops if stop)


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
    stop: tuple[str, ...] = ()  # texts that end the answer (OpenAI's `stop`), cut from it
    include_usage: bool = False  # a streamed answer ends with a usage chunk
    cancelled: threading.Event = field(default_factory=threading.Event)  # set when the client has left
    answered: bool = False  # the worker has sent the result (set by the worker thread only)
    bound: SteeringMethod | None = None  # the served method, bound when first admitted (a rerun keeps it)
    sent: str = ""  # the text sent to the stream so far (a rerun must repeat it before it may send more)


SEED_LIMIT = 2**63  # torch generators take seeds below this
MAX_STOPS, MAX_STOP_CHARS = 4, 256  # OpenAI takes up to 4 stop texts
STEERING_PROMPT_RESERVE = 256  # tokens kept free for the expert / anti-expert system prompts (a quarter of a tiny context)


def make_job(req: ChatRequest, settings: ServerSettings, available: dict[str, str | None], default_method: str,
             methods: Mapping[str, SteeringMethod], count_tokens: Callable[[list[dict[str, str]]], int],
             context: int, control_tokens: Sequence[str] = ()) -> Job:
    """Validate a request against the limits and the served methods; `available` maps each method
    name to None (served) or the reason it is not, `methods` holds the served ones (they check the
    request's per-row overrides); `count_tokens` counts a conversation's prompt tokens, `context`
    is the model's context length and `control_tokens` the tokenizer's special tokens."""
    if req.model not in (None, settings.model_name, "default"):
        raise APIError(404, f"model '{req.model}' is not served here; use '{settings.model_name}'",
                       param="model")
    if req.n != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    for name, (neutral, why) in NOT_SUPPORTED.items():
        if getattr(req, name) not in neutral:
            raise APIError(400, f"'{name}' is not supported: {why}", param=name)
    stops = req.stop_texts()
    if len(stops) > MAX_STOPS or any(len(stop) > MAX_STOP_CHARS for stop in stops):
        raise APIError(400, f"stop takes at most {MAX_STOPS} texts of at most {MAX_STOP_CHARS} characters",
                       param="stop")
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only for streamed requests (stream: true)", param="stream_options")
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
    messages = [{"role": m.role, "content": m.content} for m in req.messages]
    for i, message in enumerate(messages):
        control = next((token for token in control_tokens if token in message["content"]), None)
        if control is not None:  # rendered into the chat template, it would be read as a real one
            raise APIError(400, f"messages[{i}].content holds the chat template's control token {control!r}, "
                                "which this server refuses rather than let text pose as a turn of its own",
                           param=f"messages.{i}.content")
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
               prompt_tokens=prompt_tokens, stop=stops,
               include_usage=req.stream_options is not None and req.stream_options.include_usage)
