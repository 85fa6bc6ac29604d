"""A request to the decode loop, its sampling settings, its life cycle and its result.

What a caller asks for (conversation, method, row, config, generator, callback) and what the loop
reports back (status, tokens, prompt length) live here; the loop's own bookkeeping for a running
request (its prepared branches, its step clock, the token to feed next) is kept in `RunState`,
which only the loop writes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from steer_away.chat import Conversation, as_conversation
from steer_away.errors import InputError
from steer_away.models import LanguageModel
from steer_away.steering.framework.method import PreparedBatch, RowSteering, SteeringMethod, Unsteered

GREEDY_BELOW = 1e-5  # temperatures under this decode greedily


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    do_sample: bool = False  # greedy by default, as in the CAA study, to remove sampling noise
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_on_eos: bool = True  # False: always max_new_tokens tokens (benchmarks need equal lengths)
    stop: tuple[str, ...] = ()  # texts that end the answer as soon as one appears (cut from `Generation.text`)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise InputError("sampling needs temperature > 0 and 0 < top_p <= 1")

    @classmethod
    def sampled(cls, temperature: float, top_p: float = 1.0, **settings: Any) -> GenerationConfig:
        """Sampling at `temperature`; one under `GREEDY_BELOW` decodes greedily, as vLLM's sampler treats it
        (scores divided by it overflow: 1e-300 made `torch.multinomial` fail)."""
        do_sample = temperature >= GREEDY_BELOW
        return cls(do_sample=do_sample, temperature=temperature if do_sample else 1.0, top_p=top_p, **settings)

    def score_processors(self) -> LogitsProcessorList:
        """The edits applied to the steered scores before a token is drawn, in transformers'
        `LogitsProcessor` convention (`(input_ids, scores) -> scores`), so any of theirs can join."""
        processors = LogitsProcessorList()
        if self.do_sample:
            if self.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(self.temperature))
            if self.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.top_p))
        return processors


@dataclass(frozen=True)
class AnswerScore:
    """The unsteered model's judgement of an answer (`decoding.scoring.answer_scores`)."""

    perplexity: float  # NaN for an empty answer
    pmi: float  # nats per token; NaN for an empty answer or when relevance was not asked for
    relevance: float  # the PMI, capped at 0 for a refusal


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (end-of-sequence token), "length", "cancelled", or "error"
    score: AnswerScore | None = None  # when decoding measured it already (a choice guarded by relevance)


class RequestStatus(enum.Enum):
    """WAITING to join, RUNNING in the batch, or finished for one of four reasons."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED_STOPPED = "stop"  # picked an end-of-sequence token
    FINISHED_LENGTH = "length"  # reached max_new_tokens
    FINISHED_CANCELLED = "cancelled"  # its client left
    FINISHED_FAILED = "error"  # its own part of a step raised (`DecodeRequest.error`); its batch-mates ran on

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH, RequestStatus.FINISHED_CANCELLED,
                      RequestStatus.FINISHED_FAILED})


@dataclass(eq=False)
class RunState:
    """The loop's bookkeeping for one request (written by the loop only)."""

    prepared: PreparedBatch  # its branches, residual edits and logit rule
    texts: list[str]  # each branch's rendered chat text
    steps: int = 0  # forward passes it has been through; 0 is its prefill (a gate counts on this clock)
    next_token: int = 0  # the token to feed at the next step

    width: int = field(init=False)  # rows it takes in a forward pass: one per branch
    plain: bool = field(init=False)  # one branch whose logits pass through unchanged (a decoder may argmax them)

    def __post_init__(self) -> None:
        # Read once: the decode loop asks for these for every request at every step.
        self.width = self.prepared.num_branches
        self.plain = self.prepared.passes_logits_through

    @staticmethod
    def of(request: DecodeRequest) -> RunState:
        """A running request's state (the loop sets it when the request is added)."""
        assert request.state is not None, "the loop accepts a request before it runs"
        return request.state


@dataclass(eq=False)
class DecodeRequest:
    """One conversation to answer, steered by `method` for `row`.

    `on_token(id)` is called with each new token as it is picked (not with a stop token), from the
    thread that runs the loop. `generator` draws this request's samples: seeded, its text does not
    depend on what shares its steps.
    """

    conversation: Conversation | str
    method: SteeringMethod = field(default_factory=Unsteered)
    row: RowSteering = field(default_factory=RowSteering)
    config: GenerationConfig = field(default_factory=GenerationConfig)
    generator: torch.Generator | None = None
    on_token: Callable[[int], None] | None = None
    status: RequestStatus = RequestStatus.WAITING
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    joined_at: int = -1  # the loop step at which it was prefilled
    cancel_requested: bool = False
    state: RunState | None = None  # set by the loop when it accepts the request
    loglik: float | None = None  # a float: the loop adds each sampled token's log-probability under its method
    error: Exception | None = None  # why it FINISHED_FAILED
    score: AnswerScore | None = None  # set by whoever measured its answer's relevance while choosing it

    def fail(self, error: Exception) -> None:
        """End this request alone: what it raised is kept for its caller, its batch-mates run on."""
        self.error, self.status = error, RequestStatus.FINISHED_FAILED

    def append(self, token: int) -> bool:
        """Add a token to the answer and tell the caller; a callback that raises fails this request
        only. False when it did."""
        self.tokens.append(token)
        if self.on_token is not None:
            try:
                self.on_token(token)
            except Exception as err:
                self.fail(err)
                return False
        return True

    @property
    def done(self) -> bool:
        return self.status.finished

    @property
    def finish_reason(self) -> str | None:
        """"stop", "length", "cancelled" or "error" once it has ended, else None."""
        return self.status.value if self.status.finished else None

    @property
    def width(self) -> int:
        return self.state.width if self.state is not None else 1

    def result(self, lm: LanguageModel) -> Generation:
        """Its answer; a request that failed raises what it failed with."""
        if self.error is not None:
            raise self.error
        text = cut_at_stop(lm.tokenizer.decode(self.tokens, skip_special_tokens=True), self.config.stop)
        return Generation(text=text.strip(),
                          token_ids=list(self.tokens), prompt_tokens=self.prompt_tokens,
                          finish_reason=self.finish_reason or "length", score=self.score)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first of the stop texts in it."""
    ends = [text.find(stop) for stop in stops if stop and stop in text]
    return text[:min(ends)] if ends else text


def stop_prefix_length(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of `text` could be the start of a stop text (a stream holds them
    back until the next piece shows whether they are one)."""
    return max((n for stop in stops for n in range(min(len(stop) - 1, len(text)), 0, -1)
                if text.endswith(stop[:n])), default=0)


def requests_for(prompts: Sequence[str | Conversation], method: SteeringMethod | None,
                 rows: Sequence[RowSteering] | None, config: GenerationConfig,
                 seeds: Sequence[int | None] | None = None, device: torch.device | str = "cpu"
                 ) -> list[DecodeRequest]:
    """One request per prompt. Sampling draws from one generator per seeded row, else one generator
    (`config.seed`) shared by the batch in row order. A seeded row gets its generator even when greedy,
    for a method that samples whatever the config says (reranking)."""
    rows = list(rows) if rows is not None else [RowSteering()] * len(prompts)
    if len(rows) != len(prompts):
        raise InputError(f"{len(rows)} steering rows for {len(prompts)} prompts")
    if seeds is not None and len(seeds) != len(prompts):
        raise InputError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    shared = torch.Generator(device=device).manual_seed(config.seed) if config.do_sample and config.seed is not None else None
    out = []
    for i, (prompt, row) in enumerate(zip(prompts, rows)):
        generator = shared
        if seeds is not None and seeds[i] is not None:  # also greedy: a method may sample anyway (rerank)
            generator = torch.Generator(device=device).manual_seed(int(seeds[i]))  # type: ignore[arg-type]
        out.append(DecodeRequest(as_conversation(prompt), method or Unsteered(), row, config, generator))
    return out
