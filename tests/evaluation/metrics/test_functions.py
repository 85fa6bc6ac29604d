import math

import numpy as np
import pytest

from steer_away.evaluation.metrics import functions as metrics


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
    np.testing.assert_array_equal(metrics.decision_outcomes(np.array([1.0, -1.0, 0.0, 2.0])), [1.0, 0.0, 0.5, 1.0])
    assert metrics.decision_accuracy(np.array([1.0, -1.0, 0.0, 2.0])) == pytest.approx(2.5 / 4)
    assert math.isnan(metrics.decision_accuracy(np.array([])))
    diffs = np.zeros((2, 2, 3))
    diffs[0, 0, 0], diffs[1, 1, 2] = 1.0, -2.0
    direction = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(metrics.projection_margins(diffs, direction), [1.0, -2.0])
    np.testing.assert_allclose(metrics.safety_rule_margins(np.array([0.5, 0.01, -0.3]), tie=0.05), [0.5, 0.0, -0.3])


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


def test_user_bootstrap_resamples_whole_users():
    # synthetic: user a's pairs are all right, user b's all wrong; rows within a user never split
    correct = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    users = ["a", "a", "a", "b", "b", "b"]
    assert metrics.user_bootstrap(correct, users) == pytest.approx((0.0, 1.0))
    # a paired difference that is the same for every user has no spread
    low, high = metrics.user_bootstrap(correct, users, baseline=correct - 0.25)
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_excludes_zero():
    assert metrics.excludes_zero((0.1, 0.4)) and metrics.excludes_zero((-3.0, -1.0))
    assert not metrics.excludes_zero((-1.0, 2.0)) and not metrics.excludes_zero(None)


def test_leave_one_prompt_out_and_the_most_influential_prompt_by_hand():
    # synthetic distances, one row per prompt: p1 carries the whole drop, the others rise a little
    prompts = ["p1", "p2", "p3"]
    base = np.array([0.8, 0.1, 0.1])
    steered = np.array([0.0, 0.11, 0.11])
    without = metrics.leave_one_prompt_out(steered, base, prompts)
    assert without["p1"] == pytest.approx(10.0)  # (0.11 − 0.1) / 0.1
    assert without["p2"] == pytest.approx(100 * (0.11 - 0.9) / 0.9)
    full = metrics.pct_change(steered.mean(), base.mean())
    assert full < 0 and metrics.most_influential_prompt(full, without) == "p1"
    # for a rise, the prompt whose removal lowers it most; for no change, the one that moves it most
    assert metrics.most_influential_prompt(20.0, {"a": 25.0, "b": 5.0, "c": 30.0}) == "b"
    assert metrics.most_influential_prompt(0.0, {"a": 3.0, "b": -7.0}) == "b"
    assert metrics.most_influential_prompt(-5.0, {}) is None
    assert metrics.leave_one_prompt_out(steered[:1], base[:1], ["p1"]) == {}  # nothing would be left


def test_toxicity_shares_sum_to_one():
    shares = metrics.toxicity_shares(np.array([0.6, 0.2, 0.1, 0.1]), ["x", "x", "y", "z"])
    assert shares == pytest.approx({"x": 0.8, "y": 0.1, "z": 0.1})
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(math.isnan(v) for v in metrics.toxicity_shares(np.zeros(2), ["x", "y"]).values())
