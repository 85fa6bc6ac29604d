"""A chat request checked against the server's limits and the methods it serves, into a `ChatCall`.

Each check names the field it refuses (OpenAI's `param`), in the order a client would fix them:
the model and OpenAI options first, then lengths, steering, sampling, the messages' text and last
the prompt's length in tokens (the one check that needs the tokenizer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from steer_away.server.errors import APIError
from steer_away.server.jobs import ChatCall
from steer_away.server.protocol import ChatRequest, SteeringOptions
from steer_away.server.settings import ServerSettings
from steer_away.steering.framework.arguments import RowOverrideError, RowOverrides
from steer_away.steering.framework.method import SteeringMethod
from steer_away.steering.registry import get_method

SEED_LIMIT = 2**63  # torch generators take seeds below this
MAX_STOPS, MAX_STOP_CHARS = 4, 256  # OpenAI takes up to 4 stop texts
STEERING_PROMPT_RESERVE = 256  # tokens kept free for the expert / anti-expert system prompts (a quarter of a tiny context)

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


@dataclass(frozen=True)
class ServingView:
    """What validation reads of the server as it is now."""

    settings: ServerSettings
    available: Mapping[str, str | None]  # each registered method: None (served) or why it is not
    default_method: str
    methods: Mapping[str, SteeringMethod]  # the served ones (they check a request's per-row overrides)
    count_tokens: Callable[[list[dict[str, str]]], int]  # a conversation's prompt tokens
    context: int  # the model's context length
    control_tokens: Sequence[str] = ()  # the chat template's special tokens


def validate_chat(req: ChatRequest, view: ServingView) -> ChatCall:
    settings = view.settings
    _check_openai_options(req, settings)
    max_tokens = _max_tokens(req, settings)
    method, overrides = _steering(req.steering or SteeringOptions(), view)
    _check_sampling(req)
    messages = req.conversation()
    _check_control_tokens(messages, view.control_tokens)
    prompt_tokens = view.count_tokens(messages)
    _check_prompt_length(prompt_tokens, max_tokens, view)
    return ChatCall(messages=messages, method=method, row=req.to_row(overrides),
                    config=req.to_generation_config(max_tokens), prompt_tokens=prompt_tokens, streamed=req.stream,
                    include_usage=req.stream_options is not None and req.stream_options.include_usage)


def _check_openai_options(req: ChatRequest, settings: ServerSettings) -> None:
    if req.model not in (None, settings.model_name, "default"):
        raise APIError(404, f"model '{req.model}' is not served here; use '{settings.model_name}'", param="model")
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


def _max_tokens(req: ChatRequest, settings: ServerSettings) -> int:
    max_tokens = req.requested_max_tokens(min(settings.default_max_tokens, settings.max_tokens_limit))
    if not 1 <= max_tokens <= settings.max_tokens_limit:
        shown = (max_tokens if abs(max_tokens) < 10**12
                 else f"a {'negative ' if max_tokens < 0 else ''}number of over 12 digits")
        raise APIError(400, f"max_tokens must be in 1-{settings.max_tokens_limit}, got {shown}", param="max_tokens")
    return max_tokens


def _steering(steering: SteeringOptions, view: ServingView) -> tuple[str, RowOverrides | None]:
    """The method a request asks for (served here), its α checked, and its per-row overrides as the method reads them."""
    if steering.method is not None and not steering.method.strip():
        raise APIError(400, "steering.method is empty; name a method or leave it out for the default",
                       param="steering.method")
    method = steering.method or view.default_method
    if method not in view.available:
        raise APIError(400, f"unknown steering method '{method}' (have {sorted(view.available)})",
                       param="steering.method")
    if view.available[method] is not None:
        raise APIError(400, f"steering method '{method}' is not available on this server: {view.available[method]}",
                       param="steering.method")
    entry = get_method(method)
    if steering.alpha is not None and entry.strength_of(entry.args()) is None:  # served with default arguments
        raise APIError(400, f"steering method '{method}' has no strength α (a row's alpha would change nothing "
                            "in it); leave alpha out", param="steering.alpha")
    try:
        entry.args.check_row_strength(steering.alpha)
    except ValueError as err:
        raise APIError(400, f"steering.{err}", param="steering.alpha") from None
    if method not in view.methods:  # a reload took it away since `available` was read
        raise APIError(400, f"steering method '{method}' is not available on this server: it was reloaded",
                       param="steering.method")
    try:
        return method, view.methods[method].read_overrides(steering.overrides())
    except RowOverrideError as err:
        raise APIError(400, str(err), param=f"steering.{err.key}") from None


def _check_sampling(req: ChatRequest) -> None:
    temperature, top_p = req.sampling_values()
    if not math.isfinite(temperature) or temperature < 0 or temperature > 100:
        raise APIError(400, f"temperature must be a finite number in 0-100, got {temperature}", param="temperature")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise APIError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p")
    if req.seed is not None and not 0 <= req.seed < SEED_LIMIT:
        raise APIError(400, f"seed must be in 0-{SEED_LIMIT - 1}, got {req.seed}", param="seed")


def _check_control_tokens(messages: list[dict[str, str]], control_tokens: Sequence[str]) -> None:
    for i, message in enumerate(messages):
        control = next((token for token in control_tokens if token in message["content"]), None)
        if control is not None:  # rendered into the chat template, it would be read as a real one
            raise APIError(400, f"messages[{i}].content holds the chat template's control token {control!r}, "
                                "which this server refuses rather than let text pose as a turn of its own",
                           param=f"messages.{i}.content")


def _check_prompt_length(prompt_tokens: int, max_tokens: int, view: ServingView) -> None:
    settings = view.settings
    reserve = min(STEERING_PROMPT_RESERVE, view.context // 4)
    limit = min(settings.max_prompt_tokens, view.context - max_tokens - reserve)
    if prompt_tokens > limit:
        raise APIError(400, f"the prompt is {prompt_tokens} tokens; the limit is {limit} (the server's "
                            f"max_prompt_tokens {settings.max_prompt_tokens}, or the model's context {view.context} "
                            f"less max_tokens {max_tokens} and {reserve} for steering prompts)",
                       param="messages")
