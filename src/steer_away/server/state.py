"""What every route reads: the settings, the methods served, the worker, and the tokenizer checks."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from steer_away import internals
from steer_away.chat import render_chat, token_count
from steer_away.models import LanguageModel
from steer_away.server.engine import BatchingEngine
from steer_away.server.feedback import FeedbackService
from steer_away.server.methods import ServedMethods
from steer_away.server.settings import ServerSettings
from steer_away.server.validate import ServingView


@dataclass
class ServerState:
    lm: LanguageModel
    settings: ServerSettings
    served: ServedMethods
    engine: BatchingEngine
    counter: Any  # the request handlers' own tokenizer
    context: int
    control_tokens: list[str]
    feedback: FeedbackService | None = None  # learning from users' choices, when a feedback file is set

    @classmethod
    def start(cls, lm: LanguageModel, settings: ServerSettings, profiles: str | None, vectors: str | None,
              categories: str | None) -> ServerState:
        served = ServedMethods(lm, profiles, vectors, categories, settings.default_method)
        # Request handlers count prompt tokens with their own copy of the tokenizer: a fast tokenizer
        # keeps its padding setting in shared state, and calls from two threads with different padding
        # made the worker's padded batch ragged (found by bench/soak.py).
        counter = copy.deepcopy(lm.tokenizer)
        engine = BatchingEngine(lm, served, settings)
        feedback = None
        if settings.feedback_path is not None:
            feedback = FeedbackService(settings.feedback_path, served, engine, rate=settings.feedback_rate,
                                       burst=settings.feedback_burst)
        return cls(lm, settings, served, engine, counter, internals.context_length(lm.model),
                   chat_control_tokens(counter), feedback)

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return token_count(self.counter, render_chat(self.counter, messages))

    def view(self) -> ServingView:
        """The served methods as they are now (one read: a reload in between cannot mix two sets)."""
        served = self.served
        return ServingView(self.settings, served.availability(), served.default, served.methods, self.count_tokens,
                           self.context, self.control_tokens)


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


def chat_control_tokens(tokenizer: Any) -> list[str]:
    """The special tokens a rendered conversation is made of (those the chat template writes for a
    system, user and assistant turn, those written in the template itself, and the begin / end of
    sequence tokens): text holding one would pose as a turn of its own. Other special tokens (SmolLM2
    has `<filename>`, `<gh_stars>`, …) are ordinary words in a question."""
    template = tokenizer.chat_template
    written = " ".join(template.values()) if isinstance(template, dict) else template or ""
    for turns in (["system", "user", "assistant"], ["user", "assistant"]):
        try:  # a template may build its tokens from pieces ('<|' + role + '|>'): render one conversation
            written += render_chat(tokenizer, [{"role": role, "content": "x"} for role in turns])
            break
        except Exception:  # a template that refuses a system turn
            continue
    ends = {tokenizer.bos_token, tokenizer.eos_token}
    return sorted({t.content for t in tokenizer.added_tokens_decoder.values()
                   if t.special and t.content and (t.content in written or t.content in ends)})
