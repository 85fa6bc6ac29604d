"""Answer length: tokens per answer and the paired change, on hand-built (synthetic) rows."""

import math

import pytest

from steer_away.evaluation.metrics.base import MetricContext
from steer_away.evaluation.metrics.length import AnswerLength
from steer_away.evaluation.metrics.registry import get_metric
from steer_away.evaluation.store import AnswerRecord


def answer(user, prompt, tokens):
    return AnswerRecord(f"{user}|{prompt}", user, prompt, "harmful_borderline", "p", "x " * tokens,
                        [0.1] * 6, 0.0, 2.0, tokens)


def test_a_method_that_says_less_shows_a_negative_change_with_its_interval():
    base = [answer(u, p, 40) for u in "abc" for p in ("p1", "p2", "p3")]
    short = [answer(u, p, 10 + i) for i, (u, p) in enumerate((u, p) for u in "abc" for p in ("p1", "p2", "p3"))]
    f = AnswerLength().figures(short, {a.row_id: a for a in base}, MetricContext({}))
    assert f.value == pytest.approx(14.0) and f.change == pytest.approx(-26.0)
    assert f.change_interval[1] < 0
    assert AnswerLength().cell(f, steered=True).startswith("14.0 / -26.0 [") and AnswerLength().cell(f, True).endswith("*")
    assert AnswerLength().short_cell(f, steered=True) == "-26.0"


def test_unsteered_against_itself_has_no_change_and_the_metric_is_registered():
    base = [answer("a", "p1", 5), answer("b", "p1", 7)]
    f = AnswerLength().figures(base, {a.row_id: a for a in base}, MetricContext({}))
    assert f.value == 6.0 and math.isnan(f.change)
    assert AnswerLength().cell(f, steered=False) == "6.0 / -"
    assert isinstance(get_metric("tokens"), AnswerLength)
