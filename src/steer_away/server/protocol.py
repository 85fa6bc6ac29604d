"""The chat endpoint's wire format: OpenAI's request body with our `steering` object, as pydantic
models that convert themselves into the library's types (`to_generation_config`, `to_row`)."""

from __future__ import annotations

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

from steer_away.decoding import GenerationConfig
from steer_away.steering.framework.arguments import RowOverrides
from steer_away.steering.framework.method import RowSteering


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

    def requested_max_tokens(self, default: int) -> int:
        """OpenAI's newer `max_completion_tokens` before its older `max_tokens`, else `default`."""
        return next((v for v in (self.max_completion_tokens, self.max_tokens) if v is not None), default)

    def sampling_values(self) -> tuple[float, float]:
        """(temperature, top_p) as OpenAI reads them: greedy and the whole distribution when not given."""
        return (0.0 if self.temperature is None else self.temperature, 1.0 if self.top_p is None else self.top_p)

    def to_generation_config(self, max_new_tokens: int) -> GenerationConfig:
        """The library's settings for this request (checked against the server's limits before)."""
        temperature, top_p = self.sampling_values()
        return GenerationConfig.sampled(temperature, top_p, max_new_tokens=max_new_tokens, seed=self.seed,
                                        stop=self.stop_texts())

    def to_row(self, overrides: RowOverrides | None) -> RowSteering:
        """Who this request is for and its strength; `overrides` as its method read them from `steering`."""
        return RowSteering(user_id=self.user, alpha=self.steering.alpha if self.steering else None, overrides=overrides)

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class AnswerText(BaseModel):
    """An answer named by its text (one the client kept, or one from before a restart)."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr = Field(min_length=1, max_length=20_000)


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: the user picked `chosen` over every answer in `rejected`; an answer is the `id`
    of a completion this server gave them, or `{"text": …}`. `id` makes a resend harmless."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    user: StrictStr = Field(min_length=1, max_length=256)
    chosen: StrictStr | AnswerText
    rejected: list[StrictStr | AnswerText] = Field(min_length=1, max_length=8)
    rating: StrictInt | StrictFloat | None = Field(default=None, ge=1, le=100)
    prompt: StrictStr | None = Field(default=None, max_length=20_000)
