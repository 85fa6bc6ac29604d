"""Population and per-user steering vectors from per-pair activation differences.

- population: the plain mean difference over all pairs;
- dislike-weighted: each user's own pairs, weighted by score margin and by how much toxicity the
  rejected answer carried beyond the chosen one, shrunk toward the population vector when the user
  has few pairs (weight n/(n+k));
- Bradley–Terry basis: SVD of all pair differences gives an orthonormal k-dim basis; each user's
  ideal point θ_u is fitted on their pairs' coordinates in it, and their vector is Σ_k θ_uk b_k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from steer_away.models import ModelShape
from steer_away.profiles.bradley_terry import fit_ideal_point, orthogonal_basis
from steer_away.steering.vectors.extract import PairActivations
from steer_away.steering.vectors.kinds import BT, DISLIKE, POPULATION
from steer_away.steering.vectors.vector import SteeringVector


def population_vector(acts: PairActivations, lm_shape: ModelShape, seed: int | None = None) -> SteeringVector:
    return acts.as_vector(acts.diffs.mean(0), {"kind": POPULATION, "seed": seed}, lm_shape)


def pair_weights(acts: PairActivations, toxicity_gaps: Sequence[float] | np.ndarray) -> np.ndarray:
    """Margin/100 × (1 + |toxicity(rejected) − toxicity(chosen)|): pairs decided on toxicity count more."""
    margins = np.array([p.margin for p in acts.pairs]) / 100.0
    return margins * (1.0 + np.abs(np.asarray(toxicity_gaps, dtype=np.float64)))


def dislike_mix(diffs: torch.Tensor, weights: torch.Tensor, population: torch.Tensor, shrinkage: float
                ) -> tuple[torch.Tensor, float]:
    """One user's direction: their pairs' weighted mean difference, shrunk toward the population's by
    n / (n + shrinkage); also that share. The batch build and a server learning from feedback both use it."""
    own = (diffs * weights[:, None, None]).sum(0) / weights.sum().clamp(min=1e-12)
    keep = len(diffs) / (len(diffs) + shrinkage)
    return keep * own + (1 - keep) * population, keep


def dislike_vectors(acts: PairActivations, lm_shape: ModelShape, toxicity_gaps: Sequence[float] | np.ndarray,
                    shrinkage: float = 10.0) -> dict[str, SteeringVector]:
    population = acts.diffs.mean(0)
    weights = torch.tensor(pair_weights(acts, toxicity_gaps), dtype=acts.diffs.dtype)
    users = sorted({p.user_id for p in acts.pairs})
    out = {}
    for user in users:
        rows = torch.tensor([i for i, p in enumerate(acts.pairs) if p.user_id == user])
        mixed, keep = dislike_mix(acts.diffs[rows], weights[rows], population, shrinkage)
        out[user] = acts.as_vector(mixed, {"kind": DISLIKE, "user": user, "n_pairs": len(rows),
                                           "shrink_weight": keep}, lm_shape)
    return out


def bt_vectors(acts: PairActivations, lm_shape: ModelShape, k: int = 8, l2: float = 1.0
               ) -> tuple[dict[str, SteeringVector], np.ndarray]:
    """Per-user vectors from Bradley–Terry ideal points in an SVD basis; also returns the basis."""
    flat = acts.diffs.reshape(len(acts.pairs), -1).double().numpy()
    scale = np.linalg.norm(flat, axis=1).mean() or 1.0  # coordinates of order 1 keep λ meaningful
    basis = orthogonal_basis(flat, k)
    coords = flat @ basis.T / scale
    # Units: θ @ basis is a unit-scale direction. It is mapped back to activation units so that the
    # ideal point fitted on everyone's pairs gets exactly the population vector's norm; a user's vector
    # is then longer or shorter than the population's as their ideal point is, and one α means the
    # same push for caa-bt as for caa-population.
    theta_all = fit_ideal_point(coords, l2=l2)
    reference = float(np.linalg.norm(theta_all @ basis))
    to_activation = float(np.linalg.norm(flat.mean(0))) / reference if reference > 0 else 1.0
    out = {}
    for user in sorted({p.user_id for p in acts.pairs}):
        rows = [i for i, p in enumerate(acts.pairs) if p.user_id == user]
        theta = fit_ideal_point(coords[rows], l2=l2)
        direction = torch.from_numpy(theta @ basis * to_activation).float().reshape(len(acts.layers), -1)
        out[user] = acts.as_vector(direction, {"kind": BT, "user": user, "n_pairs": len(rows),
                                               "theta": theta.tolist(), "k": len(basis),
                                               "to_activation": to_activation}, lm_shape)
    return out, basis
