"""Model-free metrics over arrays: toxicity distance, % change, perplexity, accuracy intervals, PPA."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

from steer_away.errors import InputError


def toxicity_distance(answer_toxicity: np.ndarray, preferred: np.ndarray) -> np.ndarray:
    """Per row: mean absolute difference over attributes between an answer and the user's preference."""
    answer_toxicity, preferred = np.atleast_2d(answer_toxicity), np.atleast_2d(preferred)
    if answer_toxicity.shape != preferred.shape:
        raise InputError(f"shapes differ: answers {answer_toxicity.shape}, preferences {preferred.shape}")
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


def decision_outcomes(margins: np.ndarray) -> np.ndarray:
    """Per pair, from a signed margin (chosen minus rejected): 1 right, 0 wrong, 0.5 a tie."""
    margins = np.asarray(margins, dtype=np.float64)
    return (margins > 0) + 0.5 * (margins == 0)


def decision_accuracy(margins: np.ndarray) -> float:
    """Share of pairs predicted right from a signed margin (chosen minus rejected); ties count half."""
    outcomes = decision_outcomes(margins)
    return float(outcomes.mean()) if outcomes.size else float("nan")


def projection_margins(pair_diffs: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(pairs, layers, hidden) activation differences projected on a (layers, hidden) direction."""
    return np.einsum("plh,lh->p", pair_diffs, direction)


def safety_rule_margins(toxicity_gaps: np.ndarray, tie: float = 0.0) -> np.ndarray:
    """'The less toxic answer is chosen': margin = toxicity(rejected) − toxicity(chosen), ties within `tie` → 0."""
    gaps = np.asarray(toxicity_gaps, dtype=np.float64)
    return np.where(np.abs(gaps) <= tie, 0.0, gaps)


def mcnemar_exact(flipped_to_right: int, flipped_to_wrong: int) -> float:
    """Two-sided exact McNemar p-value for paired right/wrong answers (steered vs unsteered on the same
    questions): only the questions whose outcome changed count, and under no effect each change is a
    fair coin."""
    n = flipped_to_right + flipped_to_wrong
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(flipped_to_right, flipped_to_wrong) + 1)) / 2**n
    return min(1.0, 2 * tail)


def smallest_detectable_change(questions: int, alpha: float = 0.05) -> float:
    """The smallest accuracy change a McNemar test on `questions` paired answers can call significant:
    k one-way flips (and none back) with k the least for which the test's p < alpha, over `questions`.
    Any smaller difference in the table is indistinguishable from no change, whatever it looks like."""
    k = 1
    while mcnemar_exact(k, 0) >= alpha:
        k += 1
    return k / questions if k <= questions else float("nan")


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def distinct_n(text: str, n: int = 2) -> float:
    """Share of the answer's word n-grams that are distinct (1.0: no repetition); NaN when it has none."""
    words = _words(text)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def longest_repeat(text: str, n: int = 4) -> int:
    """How often the answer's most frequent word n-gram occurs (1: none repeats)."""
    words = _words(text)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0
    counts: dict[tuple[str, ...], int] = {}
    for gram in grams:
        counts[gram] = counts.get(gram, 0) + 1
    return max(counts.values())


COLLAPSE_DISTINCT2 = 0.6  # below this share of distinct bigrams an answer is mostly loops
COLLAPSE_REPEATS = 3  # or one 4-word phrase said three times or more
COLLAPSED_CELL_SHARE = 0.25  # a cell with this share of collapsed answers is itself collapsed


def is_collapsed(text: str) -> bool:
    """Degenerate text: empty (steering that silences the model is not a win), mostly repeated bigrams,
    or a phrase looping; short non-empty answers are never flagged."""
    if not text.strip():
        return True
    if len(_words(text)) < 8:
        return False
    return distinct_n(text, 2) < COLLAPSE_DISTINCT2 or longest_repeat(text, 4) >= COLLAPSE_REPEATS


def prompt_bootstrap(values: np.ndarray, *, baseline: np.ndarray | None = None, level: float = 0.95
                     ) -> tuple[float, float]:
    """Interval for the mean of one value per prompt (or of its difference from `baseline` on the same
    prompts), resampling prompts; a single prompt gives the point itself."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        point = float(values.mean() - (np.asarray(baseline).mean() if baseline is not None else 0.0))
        return point, point
    return cluster_bootstrap(values, ["all"] * len(values), [str(i) for i in range(len(values))],
                             baseline=baseline, level=level)


def user_bootstrap(values: np.ndarray, users: Sequence[str], *, baseline: np.ndarray | None = None,
                   level: float = 0.95) -> tuple[float, float]:
    """Interval for the mean of per-row `values` (or of the paired difference from `baseline` on the same
    rows) resampling whole users: rows of one user are not independent draws (PPA's held-out pairs)."""
    return cluster_bootstrap(values, users, ["all"] * len(users), baseline=baseline, level=level)


def excludes_zero(interval: Sequence[float] | None) -> bool:
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def leave_one_prompt_out(values: np.ndarray, baseline: np.ndarray, prompts: Sequence[str]) -> dict[str, float]:
    """Per prompt: the % change of the mean of `values` against `baseline` (paired rows) on every other
    prompt's rows. Empty with fewer than two prompts (nothing would be left)."""
    values, baseline = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    prompt_of = np.asarray(prompts)
    if len(set(prompts)) < 2:
        return {}
    return {str(p): pct_change(float(values[prompt_of != p].mean()), float(baseline[prompt_of != p].mean()))
            for p in sorted(set(prompts))}


def most_influential_prompt(full_pct: float, without: dict[str, float]) -> str | None:
    """The prompt whose removal moves a % change furthest toward zero (or across it); for a change of
    zero, the one that moves it furthest either way. None when there is none to leave out."""
    moves = {p: v for p, v in without.items() if math.isfinite(v)}
    if not moves or not math.isfinite(full_pct):
        return None
    sign = float(np.sign(full_pct))
    return max(moves, key=lambda p: sign * (full_pct - moves[p]) if sign else abs(moves[p] - full_pct))


def toxicity_shares(toxicity: np.ndarray, prompts: Sequence[str]) -> dict[str, float]:
    """Each prompt's share of the total TOXICITY mass (the sum over its rows over the sum over all rows);
    NaN shares when the total is zero."""
    toxicity = np.asarray(toxicity, dtype=np.float64)
    total = float(toxicity.sum())
    prompt_of = np.asarray(prompts)
    return {str(p): float(toxicity[prompt_of == p].sum()) / total if total else float("nan")
            for p in sorted(set(prompts))}


def cluster_bootstrap(values: np.ndarray, users: Sequence[str], prompts: Sequence[str], *,
                      baseline: np.ndarray | None = None, relative: bool = False, draws: int = 2000,
                      seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Interval for the mean of per-row `values` (or, with `baseline` on the same rows, for the mean
    difference, or with `relative` the % change) resampling users and prompts independently.

    Rows of one user, or of one prompt, are not independent draws, so resampling rows would give
    intervals far too narrow; this two-way (pigeonhole) bootstrap redraws whole users and whole
    prompts, and weighs each row by how often both its user and its prompt were drawn.
    """
    values = np.asarray(values, dtype=np.float64)
    user_ids, user_index = np.unique(np.asarray(users), return_inverse=True)
    prompt_ids, prompt_index = np.unique(np.asarray(prompts), return_inverse=True)
    rng = np.random.default_rng(seed)
    user_counts = rng.multinomial(len(user_ids), np.full(len(user_ids), 1 / len(user_ids)), size=draws)
    prompt_counts = rng.multinomial(len(prompt_ids), np.full(len(prompt_ids), 1 / len(prompt_ids)), size=draws)
    weights = user_counts[:, user_index] * prompt_counts[:, prompt_index]  # (draws, rows)
    total = weights.sum(1)
    keep = total > 0
    weights, total = weights[keep], total[keep]
    stat = weights @ values / total
    if baseline is not None:
        base = weights @ np.asarray(baseline, dtype=np.float64) / total
        stat = 100 * (stat - base) / base if relative else stat - base
    tail = (1 - level) / 2
    low, high = np.quantile(stat, [tail, 1 - tail])
    return float(low), float(high)
