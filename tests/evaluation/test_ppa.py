"""PPA's per-pair outcomes on hand-built (synthetic) activation differences, and its cache format."""

import json

import numpy as np
import pytest

from steer_away.evaluation.ppa import CHANCE, POPULATION, SAFETY_ONLY, ppa_table
from steer_away.evaluation.summary import PPA_FORMAT, PPAResult


def hand_result() -> PPAResult:
    diffs = np.zeros((4, 1, 2))
    diffs[:, 0, 0] = [1.0, 1.0, -1.0, -1.0]  # axis 0: what user a likes
    diffs[:, 0, 1] = [-1.0, -1.0, 1.0, 1.0]
    personal = {"mode": {"a": np.array([[1.0, 0.0]]), "b": np.array([[0.0, 1.0]])}}
    gaps = np.array([0.5, 0.0, -0.5, 0.01])
    return ppa_table(diffs, ["a", "a", "b", "b"], gaps, population=np.array([[1.0, 0.0]]), personal=personal)


def test_ppa_table_keeps_each_predictors_outcome_per_pair():
    result = hand_result()
    outcomes = {p.name: (p.pairs, p.correct) for p in result.predictors}
    assert outcomes["personalised (mode)"] == ([0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0])
    assert outcomes[POPULATION] == ([0, 1, 2, 3], [1.0, 1.0, 0.0, 0.0])
    assert outcomes[SAFETY_ONLY] == ([0, 1, 2, 3], [1.0, 0.5, 0.0, 0.5])  # ties count half
    assert "'chance'" in SAFETY_ONLY  # named as the CAA study names that row
    assert result.population == POPULATION and result.chance == CHANCE
    assert result.pair_users == ["a", "a", "b", "b"] and result.toxicity_ties == 0.5


def test_a_personal_predictor_predicts_only_its_users_pairs():
    diffs = np.ones((3, 1, 1))
    result = ppa_table(diffs, ["a", "b", "a"], np.zeros(3), np.ones((1, 1)), {"bt": {"a": -np.ones((1, 1))}})
    (personal,) = [p for p in result.predictors if p.name == "personalised (bt)"]
    assert personal.pairs == [0, 2] and personal.correct == [0.0, 0.0]


def test_the_cache_round_trips_and_an_older_format_is_not_read():
    result = hand_result()
    assert PPAResult.from_dict(result.to_dict()) == result
    assert PPAResult.from_dict({"pairs": 4.0, "population": 0.5}) is None  # the first cache: a dict of floats
    assert PPAResult.from_dict(result.to_dict() | {"format": PPA_FORMAT - 1}) is None


def test_ppa_result_json_is_plain():
    raw = json.loads(json.dumps(hand_result().to_dict()))
    assert raw["format"] == PPA_FORMAT and raw["predictors"][0]["correct"] == pytest.approx([1.0] * 4)
