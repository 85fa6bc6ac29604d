import math

import numpy as np
import pytest

from steer_away.evaluation import metrics
from steer_away.evaluation.ppa import CHANCE, SAFETY_ONLY, ppa_table


def test_toxicity_distance_by_hand():
    answers = np.array([[0.9, 0.5], [0.1, 0.0]])
    preferred = np.array([[0.1, 0.1], [0.1, 0.2]])
    np.testing.assert_allclose(metrics.toxicity_distance(answers, preferred), [(0.8 + 0.4) / 2, (0.0 + 0.2) / 2])
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.toxicity_distance(answers, preferred[:, :1])


def test_pct_change():
    assert metrics.pct_change(0.01609, 0.01877) == pytest.approx(-14.278, abs=1e-3)  # the CAA seed's α=7.5 row
    assert math.isnan(metrics.pct_change(1.0, 0.0))


def test_mean_by_ignores_nan():
    assert metrics.mean_by([1.0, 3.0, float("nan"), 5.0], ["a", "a", "a", "b"]) == {"a": 2.0, "b": 5.0}


def test_perplexity():
    assert metrics.perplexity([math.log(4.0)] * 3) == pytest.approx(4.0)
    assert math.isnan(metrics.perplexity([]))


def test_wilson_interval_known_value():
    low, high = metrics.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert metrics.wilson_interval(0, 5)[0] == 0.0


def test_decision_accuracy_and_projection():
    assert metrics.decision_accuracy(np.array([1.0, -1.0, 0.0, 2.0])) == pytest.approx(2.5 / 4)
    diffs = np.zeros((2, 2, 3))
    diffs[0, 0, 0], diffs[1, 1, 2] = 1.0, -2.0
    direction = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(metrics.projection_margins(diffs, direction), [1.0, -2.0])
    np.testing.assert_allclose(metrics.safety_rule_margins(np.array([0.5, 0.01, -0.3]), tie=0.05), [0.5, 0.0, -0.3])


def test_ppa_table_by_hand():
    diffs = np.zeros((4, 1, 2))
    diffs[:, 0, 0] = [1.0, 1.0, -1.0, -1.0]  # axis 0: what user a likes
    diffs[:, 0, 1] = [-1.0, -1.0, 1.0, 1.0]
    users = ["a", "a", "b", "b"]
    personal = {"mode": {"a": np.array([[1.0, 0.0]]), "b": np.array([[0.0, 1.0]])}}
    gaps = np.array([0.5, 0.0, -0.5, 0.01])
    table = ppa_table(diffs, users, gaps, population=np.array([[1.0, 0.0]]), personal=personal)
    assert table["personalised (mode)"] == 1.0
    assert table["population"] == 0.5
    assert table[SAFETY_ONLY] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert "'chance'" in SAFETY_ONLY  # named as the CAA study names that row
    assert table["toxicity ties"] == 0.5
    assert table[CHANCE] == 0.5


def test_mcnemar_by_hand():
    assert metrics.mcnemar_exact(6, 0) == pytest.approx(2 * 0.5**6)  # 0.03125
    assert metrics.mcnemar_exact(5, 1) == pytest.approx(2 * (1 + 6) / 2**6)  # 0.21875
    assert metrics.mcnemar_exact(3, 3) == 1.0 and metrics.mcnemar_exact(0, 0) == 1.0
    assert metrics.mcnemar_exact(1, 5) == metrics.mcnemar_exact(5, 1)


def test_smallest_detectable_change():
    # 5 one-way flips give p = 0.0625, 6 give 0.03125: the least significant at 5 % is 6 questions
    assert metrics.smallest_detectable_change(40) == pytest.approx(6 / 40)
    assert metrics.smallest_detectable_change(200) == pytest.approx(6 / 200)
    assert math.isnan(metrics.smallest_detectable_change(4))


def test_collapse_detection_on_known_answers():
    loop = "I always keep a message for your questions, I always keep a message for your questions, I always keep"
    normal = ("Paris is the capital of France. It sits on the Seine and has been the seat of government for "
              "centuries, with many museums and parks.")
    assert metrics.is_collapsed(loop) and not metrics.is_collapsed(normal)
    assert metrics.distinct_n("a b c d", 2) == 1.0 and metrics.distinct_n("a b a b a b", 2) == pytest.approx(2 / 5)
    assert metrics.longest_repeat(loop, 4) == 2 and metrics.longest_repeat(normal, 4) == 1
    assert metrics.is_collapsed("Sure, here it is. " * 4)  # one phrase four times
    assert not metrics.is_collapsed("no no no no")  # too short to judge
    assert metrics.is_collapsed("") and metrics.is_collapsed("  \n")  # silence is not an answer


def test_cluster_bootstrap_covers_the_true_mean_at_about_the_nominal_rate():
    """Synthetic rows = users × prompts with a user effect, a prompt effect and noise: the two-way
    bootstrap interval should contain the true mean about 95 % of the time; resampling rows as if
    independent covers far less often (why the report clusters)."""
    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in range(12) for _ in range(8)]
    prompts = [f"p{j}" for _ in range(12) for j in range(8)]
    hits = naive_hits = 0
    sims = 150
    for s in range(sims):
        u = rng.normal(0, 0.5, 12)
        p = rng.normal(0, 0.5, 8)
        values = 1.0 + np.repeat(u, 8) + np.tile(p, 12) + rng.normal(0, 0.5, 96)
        low, high = metrics.cluster_bootstrap(values, users, prompts, draws=400, seed=s)
        hits += low <= 1.0 <= high
        low, high = metrics.cluster_bootstrap(values, [str(i) for i in range(96)], ["all"] * 96, draws=400, seed=s)
        naive_hits += low <= 1.0 <= high
    assert 0.85 <= hits / sims <= 1.0, hits / sims
    assert naive_hits / sims < 0.7, naive_hits / sims


def test_cluster_bootstrap_of_a_paired_change():
    users = ["a", "a", "b", "b", "c", "c"]
    prompts = ["x", "y", "x", "y", "x", "y"]
    base = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    low, high = metrics.cluster_bootstrap(base * 0.5, users, prompts, baseline=base, relative=True, draws=300)
    assert low == pytest.approx(-50.0) and high == pytest.approx(-50.0)  # every resample halves the mean
    low, high = metrics.cluster_bootstrap(base + 1.0, users, prompts, baseline=base, draws=300)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_prompt_bootstrap_is_the_prompt_clustered_interval():
    values = np.array([0.1, 0.4, 0.2, 0.9, 0.0])
    assert metrics.prompt_bootstrap(values) == metrics.cluster_bootstrap(values, ["all"] * 5, list("abcde"))
    base = values - 0.1
    low, high = metrics.prompt_bootstrap(values, baseline=base)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)  # a constant shift has no spread
    assert metrics.prompt_bootstrap(np.array([0.3])) == (0.3, 0.3)
    assert metrics.prompt_bootstrap(np.array([0.3]), baseline=np.array([0.1])) == pytest.approx((0.2, 0.2))
