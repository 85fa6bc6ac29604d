import numpy as np
import pytest

from steer_away.profiles.bradley_terry import fit_ideal_point, log_likelihood, orthogonal_basis, preference_accuracy


def synthetic_user(theta, n, rng):
    """Pairs sampled from the BT model itself; returns chosen-minus-rejected differences."""
    a, b = rng.normal(size=(n, len(theta))), rng.normal(size=(n, len(theta)))
    p = 1 / (1 + np.exp(-(a - b) @ theta))
    first_wins = rng.random(n) < p
    return np.where(first_wins[:, None], a - b, b - a)


@pytest.mark.parametrize("theta", [np.array([1.5, -0.8, 0.0]), np.array([-2.0, 0.5, 1.0])])
def test_recovers_planted_ideal_point(theta):
    rng = np.random.default_rng(0)
    diffs = synthetic_user(theta, 4000, rng)
    fitted = fit_ideal_point(diffs, l2=0.01)
    np.testing.assert_allclose(fitted, theta, atol=0.15)
    # the fit is a maximum: nudging it lowers the penalised likelihood
    for delta in np.eye(3) * 0.05:
        assert log_likelihood(fitted, diffs) - 0.005 * fitted @ fitted >= \
            log_likelihood(fitted + delta, diffs) - 0.005 * (fitted + delta) @ (fitted + delta)


def test_hand_computed_one_dimensional_case():
    # one pair with d=1 and l2=1: optimum solves 1 - σ(θ) = θ  ->  θ ≈ 0.40106 (σ(0.40106) = 0.59894)
    assert fit_ideal_point(np.array([[1.0]]), l2=1.0)[0] == pytest.approx(0.40106, abs=1e-4)


def test_regularisation_shrinks_and_is_required():
    diffs = synthetic_user(np.array([2.0, -1.0]), 50, np.random.default_rng(1))
    assert np.linalg.norm(fit_ideal_point(diffs, l2=10)) < np.linalg.norm(fit_ideal_point(diffs, l2=0.1))
    with pytest.raises(ValueError, match="l2"):
        fit_ideal_point(diffs, l2=0)


def test_deterministic():
    diffs = synthetic_user(np.array([1.0, 1.0]), 100, np.random.default_rng(2))
    assert np.array_equal(fit_ideal_point(diffs), fit_ideal_point(diffs))


def test_orthogonal_basis():
    rng = np.random.default_rng(3)
    direction = np.array([3.0, 4.0, 0.0, 0.0]) / 5
    diffs = np.outer(rng.normal(2.0, 0.3, 200), direction) + rng.normal(0, 0.01, (200, 4))
    basis = orthogonal_basis(diffs, 3)
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-10)
    assert basis[0] @ direction > 0.999  # the dominant, sign-fixed direction comes first


def test_preference_accuracy():
    diffs = np.array([[1.0], [2.0], [-1.0], [0.0]])
    assert preference_accuracy(np.array([1.0]), diffs) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
