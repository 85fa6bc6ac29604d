"""Personalisation head to head and PPA against the population predictor, on synthetic cells and pairs."""

import pytest

from steer_away.evaluation.report.personalisation import depends_on_user, head_to_head, ppa_rows
from steer_away.evaluation.summary import PPAResult, PredictorOutcomes
from steer_away.steering.registry import POPULATION_REFERENCE
from tests.evaluation.report.cells import cell, record

GROUPS = {"s0": "strict", "s1": "strict", "t0": "tolerant", "t1": "tolerant"}
PREFERRED = {"s0": 0.0, "s1": 0.0, "t0": 0.6, "t1": 0.6}
PROMPTS = ["p0", "p1", "p2"]


def shared(toxicity):
    """Everyone gets the same answer per prompt (population-like steering)."""
    return [record(u, p, f"one answer to {p}", toxicity) for u in GROUPS for p in PROMPTS]


def personalised():
    """Strict users get 0.1, tolerant users 0.5: each 0.1 from their preference, where population's 0.3 is
    0.3 from it."""
    return [record(u, p, f"answer to {p} for {u}", 0.1 if GROUPS[u] == "strict" else 0.5)
            for u in GROUPS for p in PROMPTS]


def summary():
    return {"preferred_toxicity": PREFERRED, "sensitivity_of": GROUPS}


def test_depends_on_user_reads_the_answers():
    assert depends_on_user(personalised()) and not depends_on_user(shared(0.3))


def test_head_to_head_signs_per_group():
    cells = [cell("b", "unsteered", **summary()), cell("pop", POPULATION_REFERENCE, 4.0, **summary()),
             cell("d", "caa-dislike", 4.0, **summary()), cell("e", "eads", 1.0, **summary())]
    answers = {"b": shared(0.2), "pop": shared(0.3), "d": personalised(), "e": shared(0.25)}
    rows = {r.group: r for r in head_to_head(cells, answers)}
    assert {r.method for r in head_to_head(cells, answers)} == {"caa-dislike"}  # eads answers everyone alike
    assert list(rows) == ["strict", "tolerant", "all"]
    strict, tolerant, everyone = rows["strict"], rows["tolerant"], rows["all"]
    assert strict.population_alpha == 4.0 and strict.n == 6 and strict.users == 2
    # closer than population for both groups: distance difference −0.2, interval below zero
    assert strict.tox_dist_diff == pytest.approx(-0.2) and strict.tox_dist_diff_ci[1] < 0
    assert tolerant.tox_dist_diff == pytest.approx(-0.2) and tolerant.tox_dist_diff_ci[1] < 0
    # ... by moving toxicity in opposite directions for the two groups
    assert strict.toxicity_diff == pytest.approx(-0.2) and tolerant.toxicity_diff == pytest.approx(0.2)
    assert everyone.n == 12 and everyone.toxicity_diff == pytest.approx(0.0, abs=1e-12)
    assert everyone.toxicity_diff_ci[0] < 0 < everyone.toxicity_diff_ci[1]


def test_head_to_head_needs_a_population_cell_and_a_user_dependent_one():
    no_population = [cell("b", "unsteered", **summary()), cell("d", "caa-dislike", 4.0, **summary())]
    assert head_to_head(no_population, {"b": shared(0.2), "d": personalised()}) == []
    alike = [cell("pop", POPULATION_REFERENCE, 4.0, **summary()), cell("d", "caa-dislike", 4.0, **summary())]
    assert head_to_head(alike, {"pop": shared(0.3), "d": shared(0.1)}) == []


def test_ppa_rows_compare_with_population_on_the_same_pairs():
    result = PPAResult(
        pair_users=["a", "a", "b", "b", "c", "c"],
        predictors=[PredictorOutcomes("personalised (bt)", [0, 1, 2, 3], [1.0, 1.0, 1.0, 0.5]),
                    PredictorOutcomes("population", list(range(6)), [1.0, 0.0, 1.0, 0.0, 1.0, 1.0])],
        population="population", chance="chance (fair coin)", toxicity_ties=0.0)
    personal, population, chance = ppa_rows(result)
    assert (personal.pairs, personal.users, personal.accuracy) == (4, 2, pytest.approx(3.5 / 4))
    # by hand on pairs 0-3: 3.5/4 against population's 2/4
    assert personal.diff_vs_population == pytest.approx(3.5 / 4 - 2 / 4)
    # per user: a gains 0.5 a pair (1,1 vs 1,0), b gains 0.25 (1,0.5 vs 1,0); resampling users spans both
    assert personal.diff_vs_population_ci == pytest.approx((0.25, 0.5))
    assert population.accuracy == pytest.approx(4 / 6) and population.diff_vs_population is None
    assert population.accuracy_ci is not None and population.accuracy_ci[0] <= 4 / 6 <= population.accuracy_ci[1]
    assert (chance.predictor, chance.accuracy, chance.accuracy_ci) == ("chance (fair coin)", 0.5, None)
