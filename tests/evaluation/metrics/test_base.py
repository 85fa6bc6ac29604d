"""The metric plug-in: a registered AnswerMetric's figures (hand-computed), and every surface that renders
registered metrics (the report's main table, the CSV / JSON columns, the command line's table) shows it."""

import math

import numpy as np
import pytest

from steer_away.evaluation.metrics.base import AnswerMetric, MetricContext, MetricFigures
from steer_away.evaluation.metrics.registry import register_metric, report_metrics, unregister_metric
from steer_away.evaluation.report.analysis import main_rows
from steer_away.evaluation.report.markdown import main_table_markdown
from tests.evaluation.report.cells import cell, record


class Exclamations(AnswerMetric):
    """Synthetic: how many '!' an answer has."""

    name = "exclamations"
    header = "exclamations: mean / Δ"
    short_header = "Δ !"
    paired = True
    with_interval = True

    def value(self, answer, context):
        return float(answer.answer.count("!"))

    def cell(self, f, steered):
        return f"{f.value:.2f} / {f.change:+.2f}" if steered else f"{f.value:.2f} / -"

    def short_cell(self, f, steered):
        return f"{f.change:+.2f}" if steered else "-"


@pytest.fixture
def exclamations():
    metric = register_metric(Exclamations())
    yield metric
    unregister_metric(metric.name)


def rows_of(answers_by_prompt):
    return [record(user, prompt, text, 0.1) for (user, prompt), text in answers_by_prompt.items()]


BASE = rows_of({("a", "p1"): "fine.", ("a", "p2"): "fine!", ("b", "p1"): "ok", ("b", "p2"): "ok!"})
LOUD = rows_of({("a", "p1"): "wow!!", ("a", "p2"): "fine!", ("b", "p1"): "ok!!!", ("b", "p2"): "ok!"})


def test_figures_are_the_mean_and_the_paired_change_on_the_same_rows(exclamations):
    base = {a.row_id: a for a in BASE}
    figures = exclamations.figures(LOUD, base, MetricContext({}))
    assert figures.value == pytest.approx((2 + 1 + 3 + 1) / 4)
    assert figures.change == pytest.approx(((2 - 0) + 0 + (3 - 0) + 0) / 4)
    low, high = figures.change_interval
    assert low <= figures.change <= high and high > 0
    own = exclamations.figures(BASE, base, MetricContext({}))  # unsteered against itself: no change
    assert math.isnan(own.change) and own.change_interval is None


def test_a_metric_that_is_nan_for_some_answers_leaves_them_out_of_the_mean():
    class Half(Exclamations):
        name = "half"

        def value(self, answer, context):
            return np.nan if answer.user_id == "a" else 1.0

    assert Half().figures(LOUD, {}, MetricContext({})).value == 1.0


def test_a_registered_metric_appears_in_every_table(exclamations):
    cells = [cell("base", "unsteered", n=4), cell("loud", "caa-population", 1.0, n=4)]
    rows = main_rows(cells, answers={"base": BASE, "loud": LOUD})
    assert [m.metric.name for m in rows[1].metrics] == [m.name for m in report_metrics()][:len(rows[1].metrics)]
    loud = rows[1].metric("exclamations")
    assert isinstance(loud, MetricFigures) and loud.value == pytest.approx(1.75)
    columns = rows[1].columns()
    assert columns["exclamations"] == pytest.approx(1.75) and columns["exclamations_delta"] == pytest.approx(1.25)
    assert list(columns)[-1] == "collapsed" and "exclamations_delta_ci" in columns
    table = main_table_markdown(rows)
    header, rule, *lines = table.splitlines()
    assert "| exclamations: mean / Δ |" in header and rule.count("---") == header.count("|") - 1
    assert "| 1.75 / +1.25 |" in lines[1] and "| 0.50 / - |" in lines[0]


def test_unregistered_it_is_gone_from_the_tables(exclamations):
    unregister_metric("exclamations")
    rows = main_rows([cell("base", "unsteered", n=4)], answers={"base": BASE})
    assert rows[0].metric("exclamations") is None and "exclamations" not in rows[0].columns()
    assert "exclamations" not in main_table_markdown(rows)
