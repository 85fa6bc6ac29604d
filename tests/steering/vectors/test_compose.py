import numpy as np
import pytest
import torch

from steer_away.steering.vectors.compose import bt_vectors, dislike_vectors, pair_weights, population_vector
from steer_away.steering.vectors.extract import PairActivations
from tests.steering.helpers import make_pairs

SHAPE = ("tiny", 3, 4)


def acts_from(diffs, pairs):
    return PairActivations(diffs=torch.tensor(np.asarray(diffs), dtype=torch.float32), layers=[1], pairs=pairs,
                           residual_norms={1: 5.0}, position="last")


def test_population_is_plain_mean():
    pairs = make_pairs(2)
    acts = acts_from([[[1.0, 0.0, 2.0]], [[3.0, 2.0, 0.0]]], pairs)
    assert population_vector(acts, SHAPE).directions[1].tolist() == [2.0, 1.0, 1.0]


def test_dislike_weights_and_shrinkage_by_hand():
    pairs = make_pairs(4)  # users alternate u1, u2
    diffs = [[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[3.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]]
    acts = acts_from(diffs, pairs)
    gaps = [0.0, 0.5, 1.0, 0.0]
    w = pair_weights(acts, gaps)
    np.testing.assert_allclose(w, [p.margin / 100 * (1 + abs(g)) for p, g in zip(pairs, gaps)])
    vectors = dislike_vectors(acts, SHAPE, gaps, shrinkage=2.0)
    own_u1 = (w[0] * np.array([1.0, 0, 0]) + w[2] * np.array([3.0, 0, 0])) / (w[0] + w[2])
    population = np.mean([d[0] for d in diffs], axis=0)
    expected = 0.5 * own_u1 + 0.5 * population  # 2 pairs, shrinkage 2 -> weight 2/4
    np.testing.assert_allclose(vectors["u1"].directions[1].numpy(), expected, rtol=1e-6)
    assert vectors["u1"].meta["shrink_weight"] == pytest.approx(0.5)


def test_bt_vectors_point_along_each_users_preference():
    rng = np.random.default_rng(0)
    pairs = make_pairs(200, users=("a", "b"))
    axis_a, axis_b = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    diffs = []
    for p in pairs:
        own = axis_a if p.user_id == "a" else axis_b
        diffs.append([own * rng.uniform(0.5, 1.5) + rng.normal(0, 0.05, 3)])
    vectors, basis = bt_vectors(acts_from(diffs, pairs), SHAPE, k=2, l2=0.1)
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-8)
    va, vb = vectors["a"].directions[1].numpy(), vectors["b"].directions[1].numpy()
    assert va @ axis_a / np.linalg.norm(va) > 0.9
    assert vb @ axis_b / np.linalg.norm(vb) > 0.9


def test_bt_vectors_are_in_population_units():
    """An ideal-point vector used to come out with norm ≈ 1 (basis units), tens of times shorter than
    the population vector, so α meant different things per method. Now a user whose pairs look like
    everyone's gets about the population's norm, whatever the activation scale."""
    rng = np.random.default_rng(1)
    pairs = make_pairs(300, users=("a", "b", "c"))
    axis = np.array([3.0, 1.0, 0.0])
    for activation_scale in (1.0, 40.0):
        diffs = [[activation_scale * (axis * rng.uniform(0.5, 1.5) + rng.normal(0, 1.0, 3))] for _ in pairs]
        acts = acts_from(diffs, pairs)
        population = float(population_vector(acts, SHAPE).directions[1].norm())
        vectors, _ = bt_vectors(acts, SHAPE, k=2, l2=1.0)
        for user, vector in vectors.items():
            ratio = float(vector.directions[1].norm()) / population
            assert 0.6 < ratio < 1.6, (activation_scale, user, ratio)
