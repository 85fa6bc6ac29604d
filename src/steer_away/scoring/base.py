"""The toxicity scorer interface shared by every backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

# Perspective API attribute names; every backend reports a subset of these, in this order.
ATTRIBUTES = ("TOXICITY", "SEVERE_TOXICITY", "INSULT", "PROFANITY", "THREAT", "IDENTITY_ATTACK")


class ScorerError(RuntimeError):
    """A backend could not score a text; the message names the backend and the cause."""


class ToxicityScorer(ABC):
    """Scores texts on named toxicity attributes, each a probability in [0, 1]."""

    backend: str = "scorer"
    attributes: tuple[str, ...] = ATTRIBUTES

    @abstractmethod
    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(self.attributes)) float array."""

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.attributes)))
        return np.asarray(self.score_batch(list(texts)), dtype=np.float64)
