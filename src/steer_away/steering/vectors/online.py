"""Dislike-weighted per-user vectors that follow a user's choices in a live chat.

The same definition as `vectors compose --mode dislike` (compose.py: `dislike_mix`): the user's pairs'
activation differences, each weighted by its margin / 100 × (1 + |TOXICITY gap|), averaged and shrunk
toward the population's mean difference by n / (n + k). Here the pairs are the user's choices (the
answer they picked over each one they did not), read at the layers and position of the stored pair
activations, and k is the shrinkage the served bank was composed with (recovered from its vectors'
cards). The population's mean difference is the stored activations' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from steer_away.chat import render_chat
from steer_away.models import LanguageModel
from steer_away.steering.vectors.bank import VectorBank
from steer_away.steering.vectors.compose import dislike_mix
from steer_away.steering.vectors.extract import PairActivations, load_pair_activations, response_activations
from steer_away.steering.vectors.kinds import DISLIKE
from steer_away.steering.vectors.vector import SteeringVector

ACTIVATIONS_FILE = "pair_activations.safetensors"
DEFAULT_SHRINKAGE = 10.0  # compose's default, for a bank whose cards do not say


def bank_shrinkage(bank: VectorBank) -> float:
    """The k a dislike bank was composed with: a user vector's card records n and its share n / (n + k)."""
    for vector in bank.users.values():
        n, keep = vector.meta.get("n_pairs"), vector.meta.get("shrink_weight")
        if isinstance(n, int) and isinstance(keep, float) and 0 < keep < 1:
            return n * (1 - keep) / keep
    return DEFAULT_SHRINKAGE


class DislikeLearner:
    """Per-user evidence (activation differences and weights) and the vectors it makes."""

    kind = DISLIKE

    def __init__(self, store: str | Path, shrinkage: float) -> None:
        acts, self.shape = load_pair_activations(Path(store) / ACTIVATIONS_FILE)
        self.population = acts.diffs.mean(0)
        self.template = PairActivations(acts.diffs[:0], acts.layers, [], acts.residual_norms, acts.position)
        self.shrinkage = shrinkage
        self.diffs: dict[str, list[torch.Tensor]] = {}
        self.weights: dict[str, list[float]] = {}

    def differences(self, lm: LanguageModel, prompt: str, chosen: str, rejected: Sequence[str]) -> torch.Tensor:
        """(pairs, layers, hidden): chosen minus each rejected answer's activations. It runs the model:
        call it where the model may run (a server's worker thread, between decoding steps)."""
        head = render_chat(lm.tokenizer, [{"role": "user", "content": prompt}])
        texts = [head + chosen, *(head + r for r in rejected)]
        acts = response_activations(lm, [head] * len(texts), texts, self.template.layers, self.template.position)
        return (acts[:1] - acts[1:]).cpu()

    def add(self, user_id: str, diffs: torch.Tensor, weights: Sequence[float]) -> SteeringVector:
        self.diffs.setdefault(user_id, []).extend(diffs)
        self.weights.setdefault(user_id, []).extend(weights)
        return self.vector(user_id)

    def vector(self, user_id: str) -> SteeringVector:
        diffs = torch.stack(self.diffs[user_id]).to(self.population.dtype)
        weights = torch.tensor(self.weights[user_id], dtype=self.population.dtype)
        mixed, keep = dislike_mix(diffs, weights, self.population, self.shrinkage)
        return self.template.as_vector(mixed, {"kind": DISLIKE, "user": user_id, "n_pairs": len(diffs),
                                               "shrink_weight": keep, "source": "feedback"}, self.shape)

    def reset(self, user_id: str) -> None:
        self.diffs.pop(user_id, None)
        self.weights.pop(user_id, None)
