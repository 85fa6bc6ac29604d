"""Personalised preference accuracy (PPA): can a user's steering direction tell which answer they chose?

On held-out pairs, each candidate predictor gives a signed margin (chosen minus rejected); the
pair counts as right when the margin is positive and half when it is zero. Predictors: each user's
own vector (dislike-weighted, Bradley–Terry), the population vector, a safety-only rule ("the less
toxic answer wins"; the row the CAA study labels "chance") and a fair coin (50 %). Held-out pairs
come from opening prompts no vector was extracted from.
"""

from __future__ import annotations

import json

import numpy as np

from steer_away import internals
from steer_away.data.pairs import sample_pairs
from steer_away.evaluation.metrics import decision_accuracy, projection_margins, safety_rule_margins
from steer_away.evaluation.sweep.cells import EvalContext
from steer_away.profiles.build import pair_toxicity_diffs
from steer_away.steering.bank_kinds import COMPOSED_KINDS
from steer_away.steering.extract import extract_pair_activations
from steer_away.steering.vectors import SteeringVector

# The CAA study's labels: its 48.3 % "chance" row is the safety-only rule, the real chance level is 50 %.
SAFETY_ONLY = "safety-only (the study's 'chance' row)"
CHANCE = "chance (fair coin)"


def ppa_table(
    pair_diffs: np.ndarray,
    users: list[str],
    toxicity_gaps: np.ndarray,
    population: np.ndarray,
    personal: dict[str, dict[str, np.ndarray]],
    *,
    tie: float = 0.05,
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
    out[SAFETY_ONLY] = decision_accuracy(safety_rule_margins(toxicity_gaps, tie))
    out[CHANCE] = 0.5  # a fair coin's expected accuracy, not one draw of it
    gaps = np.abs(np.asarray(toxicity_gaps))
    out["toxicity ties"] = float(np.mean(gaps <= tie)) if gaps.size else float("nan")
    return out


def compute_ppa(ctx: EvalContext, max_pairs: int = 300) -> dict[str, float]:
    """PPA of a sweep's vectors on its held-out pairs (cached in the run folder per fingerprint)."""
    cache = ctx.config.run_dir / "ppa.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("fingerprint") == ctx.fingerprint:
            return dict(saved["ppa"])
    if not (ctx.config.run_dir / "vectors" / "population.safetensors").is_file():
        return {}
    population = ctx.resources.vector_bank("population").default
    if population is None:
        return {}
    pairs = [p for p in sample_pairs(ctx.heldout_pairs, max_pairs, seed=ctx.config.seed) if p.user_id in ctx.profiles]
    if not pairs:
        return {}
    layers = internals.check_layers(population.layers, internals.num_layers(ctx.lm.model))
    acts = extract_pair_activations(ctx.lm, pairs, layers, position=ctx.config.position,
                                    batch_size=ctx.config.batch_size)
    diffs = acts.diffs.double().numpy()

    def stack(vector: SteeringVector) -> np.ndarray:
        return np.stack([vector.directions[l].double().numpy() for l in layers])

    personal = {mode: {u: stack(v) for u, v in ctx.resources.vector_bank(mode).users.items()}
                for mode in COMPOSED_KINDS}
    gaps = -pair_toxicity_diffs(pairs, ctx.scorer)[:, 0]
    table = ppa_table(diffs, [p.user_id for p in pairs], gaps, stack(population), personal)
    cache.write_text(json.dumps({"fingerprint": ctx.fingerprint, "ppa": table}, indent=1))
    return table
