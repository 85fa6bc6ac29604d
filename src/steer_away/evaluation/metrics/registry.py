"""The one list of the report's per-answer metrics, in the order its tables show them: a new metric
is one module (an `AnswerMetric`) plus one `register_metric(...)` line here."""

from __future__ import annotations

from steer_away.evaluation.metrics.base import AnswerMetric
from steer_away.evaluation.metrics.guards import Refusals, Relevance, Violations
from steer_away.evaluation.metrics.length import AnswerLength

_METRICS: dict[str, AnswerMetric] = {}


def register_metric(metric: AnswerMetric) -> AnswerMetric:
    if metric.name in _METRICS:
        raise ValueError(f"a metric named '{metric.name}' is already registered")
    _METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> None:
    _METRICS.pop(name, None)


def report_metrics() -> list[AnswerMetric]:
    return list(_METRICS.values())


def get_metric(name: str) -> AnswerMetric:
    try:
        return _METRICS[name]
    except KeyError:
        raise KeyError(f"no metric named '{name}' (have: {', '.join(_METRICS)})") from None


register_metric(Relevance())
register_metric(Refusals())
register_metric(Violations())
register_metric(AnswerLength())
