"""Detoxify (Unitary's BERT-family Jigsaw classifiers), when its checkpoint can be had."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from steer_away.scoring.base import ScorerError, ToxicityScorer

_KEYS = (("toxicity", "TOXICITY"), ("severe_toxicity", "SEVERE_TOXICITY"), ("insult", "INSULT"),
         ("obscene", "PROFANITY"), ("threat", "THREAT"), ("identity_attack", "IDENTITY_ATTACK"))


class DetoxifyScorer(ToxicityScorer):
    backend = "detoxify"
    attributes = tuple(attr for _, attr in _KEYS)

    def __init__(self, variant: str = "original", checkpoint: str | None = None, device: str = "cpu") -> None:
        try:
            from detoxify import Detoxify
        except ImportError as err:
            raise ScorerError("the detoxify backend needs 'pip install detoxify'") from err
        try:
            self._model = Detoxify(variant, checkpoint=checkpoint, device=device)
        except Exception as err:  # download or checkpoint errors
            raise ScorerError(f"cannot load Detoxify '{variant}' (checkpoint={checkpoint}): {err}") from err
        self.backend = f"detoxify-{variant}"

    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = self._model.predict(list(texts))
        return np.stack([np.asarray(out[key], dtype=np.float64) for key, _ in _KEYS], axis=1)
