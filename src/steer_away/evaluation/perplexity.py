"""Perplexity of generated answers under the unsteered model, conditioned on their prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence

from steer_away.chat import Conversation
from steer_away.generation import continuation_logliks
from steer_away.models import LanguageModel


def answer_perplexities(lm: LanguageModel, prompts: Sequence[str | Conversation], answers: Sequence[str],
                        batch_size: int = 8) -> list[float]:
    """One perplexity per answer (NaN for an empty answer); hooks must not be active here.

    Answers to the same prompt (one per user or group in a sweep) share the prompt's encoding, so
    a prompt is run once per batch however many answers it has; `batch_size` counts answers.
    """
    out: list[float] = [math.nan] * len(answers)
    for start in range(0, len(answers), batch_size):
        members: dict[str, list[int]] = {}
        first: dict[str, str | Conversation] = {}
        for index in range(start, min(start + batch_size, len(answers))):
            key = repr(prompts[index])
            members.setdefault(key, []).append(index)
            first.setdefault(key, prompts[index])
        scored = continuation_logliks(lm, list(first.values()),
                                      [[answers[i] for i in group] for group in members.values()])
        for group, results in zip(members.values(), scored):
            for index, (loglik, n_tokens) in zip(group, results):
                if answers[index].strip() and n_tokens:
                    out[index] = math.exp(-loglik / n_tokens)
    return out
