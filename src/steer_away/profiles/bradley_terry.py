"""Bradley–Terry ideal points and orthogonal bases: plain NumPy, no model.

A user u prefers response a over b with probability σ(θ_u · (x_a − x_b)). Given the differences
d_i = x_chosen − x_rejected of that user's pairs, θ_u maximises Σ log σ(θ_u · d_i) − λ/2 ‖θ_u‖²,
solved by Newton's method (the objective is strictly concave, so the answer is unique and the
solver deterministic).
"""

from __future__ import annotations

import numpy as np

from steer_away.errors import InputError


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_ideal_point(diffs: np.ndarray, l2: float = 1.0, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """θ for one user from (n_pairs, k) chosen-minus-rejected differences."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.ndim != 2:
        raise InputError(f"diffs must be (pairs, dims), got shape {diffs.shape}")
    if l2 <= 0:
        raise InputError("l2 must be > 0: with only 'chosen' labels the unregularised fit diverges")
    k = diffs.shape[1]
    theta = np.zeros(k)
    for _ in range(max_iter):
        p = _sigmoid(diffs @ theta)
        grad = diffs.T @ (1.0 - p) - l2 * theta
        hess = -(diffs.T * (p * (1.0 - p))) @ diffs - l2 * np.eye(k)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.max(np.abs(step)) < tol:
            break
    return theta


def log_likelihood(theta: np.ndarray, diffs: np.ndarray) -> float:
    return float(np.sum(np.log(_sigmoid(np.asarray(diffs) @ theta) + 1e-300)))


def orthogonal_basis(diffs: np.ndarray, k: int) -> np.ndarray:
    """Top-k right singular vectors of the stacked differences: (k, dim), orthonormal rows.

    Uncentred on purpose: the mean difference (the population direction) is signal, not offset.
    Each vector's sign is fixed so the mean difference projects positively onto it.
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    k = min(k, *diffs.shape)
    _, _, vt = np.linalg.svd(diffs, full_matrices=False)
    basis = vt[:k]
    signs = np.sign(basis @ diffs.mean(axis=0))
    signs[signs == 0] = 1.0
    return basis * signs[:, None]


def preference_accuracy(theta: np.ndarray, diffs: np.ndarray) -> float:
    """Share of pairs where θ ranks the chosen response above the rejected one (ties count half)."""
    z = np.asarray(diffs) @ theta
    return float(np.mean((z > 0) + 0.5 * (z == 0)))
