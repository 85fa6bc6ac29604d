"""A toxicity scorer whose answer is known by construction (synthetic, for tests): TOXICITY is the
share of characters of a text that are in `toxic_chars`, so a test can say which text is nearer a target."""

from collections.abc import Sequence

import numpy as np

from steer_away.profiles.build import UserProfile
from steer_away.scoring.base import ToxicityScorer


class CharShareScorer(ToxicityScorer):
    backend = "char-share"
    attributes = ("TOXICITY",)

    def __init__(self, toxic_chars: str = "aeiou") -> None:
        self.toxic_chars = set(toxic_chars)
        self.calls = 0

    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += len(texts)
        return np.array([[sum(c in self.toxic_chars for c in t) / max(len(t), 1)] for t in texts])


def profile(user: str, preferred: float, sensitivity: str = "moderate") -> UserProfile:
    return UserProfile(user, ["TOXICITY"], [preferred], [preferred + 0.1], 0.1, None, sensitivity, [0.0], 1, 1)
