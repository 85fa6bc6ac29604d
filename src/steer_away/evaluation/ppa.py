"""Personalised preference accuracy (PPA): can a user's steering direction tell which answer they chose?

On held-out pairs, each candidate predictor gives a signed margin (chosen minus rejected); the
pair counts as right when the margin is positive and half when it is zero. Predictors: each user's
own vector (dislike-weighted, Bradley–Terry), the population vector, a safety-only rule ("the less
toxic answer wins"; the row the CAA study labels "chance") and a fair coin (50 %). Held-out pairs
come from opening prompts no vector was extracted from. Outcomes are kept pair by pair so that the
report compares each predictor with the population one on the same pairs.
"""

from __future__ import annotations

import json

import numpy as np

from steer_away import internals
from steer_away.data.pairs import sample_pairs
from steer_away.evaluation.metrics.functions import decision_outcomes, projection_margins, safety_rule_margins
from steer_away.evaluation.summary import PPAResult, PredictorOutcomes
from steer_away.evaluation.sweep.cells import EvalContext
from steer_away.profiles.build import pair_toxicity_diffs
from steer_away.steering.vectors.extract import extract_pair_activations
from steer_away.steering.vectors.kinds import COMPOSED_KINDS
from steer_away.steering.vectors.vector import SteeringVector

# The CAA study's labels: its 48.3 % "chance" row is the safety-only rule, the real chance level is 50 %.
SAFETY_ONLY = "safety-only (the study's 'chance' row)"
CHANCE = "chance (fair coin)"
POPULATION = "population"


def ppa_table(
    pair_diffs: np.ndarray,
    users: list[str],
    toxicity_gaps: np.ndarray,
    population: np.ndarray,
    personal: dict[str, dict[str, np.ndarray]],
    *,
    tie: float = 0.05,
) -> PPAResult:
    """Each predictor's outcome per pair it predicts (personal ones: the pairs of users with a vector).
    `pair_diffs`: (pairs, layers, hidden) activation differences; `toxicity_gaps`: toxicity(rejected) −
    toxicity(chosen); `personal[mode][user]`: (layers, hidden)."""
    predictors = []
    for mode, vectors in personal.items():
        rows = [i for i, u in enumerate(users) if u in vectors]
        if rows:
            margins = np.array([np.einsum("lh,lh->", pair_diffs[i], vectors[users[i]]) for i in rows])
            predictors.append(PredictorOutcomes(f"personalised ({mode})", rows, decision_outcomes(margins).tolist()))
    every = list(range(len(users)))
    predictors.append(PredictorOutcomes(POPULATION, every,
                                        decision_outcomes(projection_margins(pair_diffs, population)).tolist()))
    predictors.append(PredictorOutcomes(SAFETY_ONLY, every,
                                        decision_outcomes(safety_rule_margins(toxicity_gaps, tie)).tolist()))
    gaps = np.abs(np.asarray(toxicity_gaps))
    return PPAResult(pair_users=list(users), predictors=predictors, population=POPULATION, chance=CHANCE,
                     toxicity_ties=float(np.mean(gaps <= tie)) if gaps.size else float("nan"))


def compute_ppa(ctx: EvalContext, max_pairs: int = 300) -> PPAResult | None:
    """PPA of a sweep's vectors on its held-out pairs (cached in the run folder per fingerprint and
    format); None without a population vector or held-out pairs."""
    cache = ctx.config.run_dir / "ppa.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("fingerprint") == ctx.fingerprint and (cached := PPAResult.from_dict(saved.get("ppa") or {})):
            return cached
    if not (ctx.config.run_dir / "vectors" / "population.safetensors").is_file():
        return None
    population = ctx.resources.vector_bank("population").default
    if population is None:
        return None
    pairs = [p for p in sample_pairs(ctx.heldout_pairs, max_pairs, seed=ctx.config.seed) if p.user_id in ctx.profiles]
    if not pairs:
        return None
    layers = internals.check_layers(population.layers, internals.num_layers(ctx.lm.model))
    acts = extract_pair_activations(ctx.lm, pairs, layers, position=ctx.config.position,
                                    batch_size=ctx.config.extract_batch_size)
    diffs = acts.diffs.double().numpy()

    def stack(vector: SteeringVector) -> np.ndarray:
        return np.stack([vector.directions[l].double().numpy() for l in layers])

    personal = {mode: {u: stack(v) for u, v in ctx.resources.vector_bank(mode).users.items()}
                for mode in COMPOSED_KINDS}
    gaps = -pair_toxicity_diffs(pairs, ctx.scorer)[:, 0]
    table = ppa_table(diffs, [p.user_id for p in pairs], gaps, stack(population), personal)
    cache.write_text(json.dumps({"fingerprint": ctx.fingerprint, "ppa": table.to_dict()}))
    return table
