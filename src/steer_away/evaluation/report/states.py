"""A set of answers' guard figures (relevance and its paired change against unsteered, shares refused /
off-request / collapsed, boundary violations), from the guard metrics (`metrics/guards.py`): what
`guards.py` shows per cell, group and category."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from steer_away.evaluation.metrics.base import MetricContext
from steer_away.evaluation.metrics.guards import Refusals, Relevance, Violations, answer_state
from steer_away.evaluation.report.rows import GuardFigures
from steer_away.evaluation.store import AnswerRecord

RELEVANCE, REFUSALS, VIOLATIONS = Relevance(), Refusals(), Violations()


def guard_figures(rows: Sequence[AnswerRecord], base: Mapping[str, AnswerRecord],
                  tolerated: Mapping[str, float]) -> GuardFigures:
    """A set of answers' guard figures; relevance's change against `base` (row id -> unsteered answer)."""
    context = MetricContext(tolerated)
    relevance = RELEVANCE.figures(rows, base, context)
    violations = VIOLATIONS.figures(rows, base, context)
    states = [answer_state(a) for a in rows]
    n = max(len(rows), 1)
    return GuardFigures(relevance.value, relevance.change, relevance.change_interval,
                        REFUSALS.figures(rows, base, context).value, states.count("off-request") / n,
                        states.count("collapsed") / n, violations.value, violations.interval)
