"""Do a category's expert and anti-expert branches differ in toxicity on this model?

Logit steering moves the base toward the expert and away from the anti-expert; if both branches
answer alike (a small model ignoring a system prompt that asks for rudeness), the contrast carries
no toxicity signal and the method can do nothing. This answers a fixed prompt set greedily with the
base context and with each branch's own context, and scores each set of answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from steer_away.evaluation.metrics.functions import prompt_bootstrap
from steer_away.generation import GenerationConfig, generate
from steer_away.models import LanguageModel
from steer_away.scoring.base import ToxicityScorer
from steer_away.steering.framework.categories import SteeringCategory
from steer_away.steering.methods.logits import branch_contexts

BRANCHES = ("base", "expert", "anti_expert")


@dataclass(frozen=True)
class BranchToxicity:
    category: str
    branch: str
    mean: float
    ci: tuple[float, float]
    most_toxic: str


def check_branches(lm: LanguageModel, categories: Mapping[str, SteeringCategory], prompts: Sequence[str],
                   scorer: ToxicityScorer, *, max_new_tokens: int = 40, batch_size: int = 8) -> list[BranchToxicity]:
    """Mean TOXICITY (prompt-resampled 95 % CI) of each branch's own greedy answers, per category."""
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    conversations = [[{"role": "user", "content": p}] for p in prompts]

    def answer(contexts: list) -> list[str]:
        texts: list[str] = []
        for start in range(0, len(contexts), batch_size):
            texts += [o.text for o in generate(lm, contexts[start:start + batch_size], config=config)]
        return texts

    def measured(category: str, branch: str, texts: list[str]) -> BranchToxicity:
        tox = scorer.score(texts)[:, 0]
        ci = prompt_bootstrap(tox)
        return BranchToxicity(category, branch, float(np.mean(tox)), (float(ci[0]), float(ci[1])),
                              texts[int(np.argmax(tox))])

    rows = [measured("-", "base", answer(conversations))]
    for name, category in categories.items():
        contexts = [branch_contexts(category, c) for c in conversations]
        for branch in ("expert", "anti_expert"):
            rows.append(measured(name, branch, answer([c[branch] for c in contexts])))
    return rows
