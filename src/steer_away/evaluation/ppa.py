"""Personalised preference accuracy (PPA): can a user's steering direction tell which answer they chose?

On held-out pairs, each candidate predictor gives a signed margin (chosen minus rejected); the
pair counts as right when the margin is positive and half when it is zero. Predictors: each user's
own vector (dislike-weighted, Bradley–Terry), the population vector, a safety-only rule ("the less
toxic answer wins") and coin flips.
"""

from __future__ import annotations

import numpy as np

from steer_away.evaluation.metrics import decision_accuracy, projection_margins, safety_rule_margins


def ppa_table(
    pair_diffs: np.ndarray,
    users: list[str],
    toxicity_gaps: np.ndarray,
    population: np.ndarray,
    personal: dict[str, dict[str, np.ndarray]],
    *,
    tie: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy per predictor. `pair_diffs`: (pairs, layers, hidden) activation differences;
    `toxicity_gaps`: toxicity(rejected) − toxicity(chosen); `personal[mode][user]`: (layers, hidden)."""
    out: dict[str, float] = {"pairs": float(len(users))}
    for mode, vectors in personal.items():
        rows = [i for i, u in enumerate(users) if u in vectors]
        if rows:
            margins = np.array([np.einsum("lh,lh->", pair_diffs[i], vectors[users[i]]) for i in rows])
            out[f"personalised ({mode})"] = decision_accuracy(margins)
    out["population"] = decision_accuracy(projection_margins(pair_diffs, population))
    out["safety-only"] = decision_accuracy(safety_rule_margins(toxicity_gaps, tie))
    coin = np.random.default_rng(seed).choice([-1.0, 1.0], size=len(users))
    out["chance"] = decision_accuracy(coin)
    gaps = np.abs(np.asarray(toxicity_gaps))
    out["toxicity ties"] = float(np.mean(gaps <= tie)) if gaps.size else float("nan")
    return out
