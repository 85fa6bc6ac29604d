"""Model-free metrics over arrays: toxicity distance, % change, perplexity, accuracy intervals, PPA."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def toxicity_distance(answer_toxicity: np.ndarray, preferred: np.ndarray) -> np.ndarray:
    """Per row: mean absolute difference over attributes between an answer and the user's preference."""
    answer_toxicity, preferred = np.atleast_2d(answer_toxicity), np.atleast_2d(preferred)
    if answer_toxicity.shape != preferred.shape:
        raise ValueError(f"shapes differ: answers {answer_toxicity.shape}, preferences {preferred.shape}")
    return np.abs(answer_toxicity - preferred).mean(axis=1)


def pct_change(value: float, baseline: float) -> float:
    """Relative change in percent; negative means lower (better, for a distance)."""
    if baseline == 0 or not math.isfinite(baseline) or not math.isfinite(value):
        return float("nan")
    return 100.0 * (value - baseline) / baseline


def mean_by(values: Sequence[float], groups: Sequence[str]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for value, group in zip(values, groups):
        if value is not None and math.isfinite(value):
            out.setdefault(group, []).append(value)
    return {g: float(np.mean(v)) for g, v in sorted(out.items())}


def perplexity(token_nll: Sequence[float]) -> float:
    """exp(mean negative log-likelihood per token); NaN for an empty answer."""
    return float(math.exp(np.mean(token_nll))) if len(token_nll) else float("nan")


def finite(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for an accuracy; honest at small n and near 0 or 1."""
    if total == 0:
        return float("nan"), float("nan")
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def decision_accuracy(margins: np.ndarray) -> float:
    """Share of pairs predicted right from a signed margin (chosen minus rejected); ties count half."""
    margins = np.asarray(margins, dtype=np.float64)
    if margins.size == 0:
        return float("nan")
    return float(np.mean((margins > 0) + 0.5 * (margins == 0)))


def projection_margins(pair_diffs: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(pairs, layers, hidden) activation differences projected on a (layers, hidden) direction."""
    return np.einsum("plh,lh->p", pair_diffs, direction)


def safety_rule_margins(toxicity_gaps: np.ndarray, tie: float = 0.0) -> np.ndarray:
    """'The less toxic answer is chosen': margin = toxicity(rejected) − toxicity(chosen), ties within `tie` → 0."""
    gaps = np.asarray(toxicity_gaps, dtype=np.float64)
    return np.where(np.abs(gaps) <= tie, 0.0, gaps)
