"""A per-answer metric as a plug-in: one class gives the value of an answer, a cell's figure with its
interval, the paired change against unsteered on the same rows, and its report columns.

The report's main table, its CSV and JSON files and the command line's table show every registered
metric (`registry.py`), in registration order, after the core figures (TOXICITY distance, fluency,
utility) that the study's definitions fix.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from steer_away.evaluation.metrics.functions import cluster_bootstrap
from steer_away.evaluation.store import AnswerRecord
from steer_away.evaluation.summary import NAN, Interval


@dataclass(frozen=True)
class MetricContext:
    """What a metric may read beside an answer: each user's most tolerated TOXICITY (from their profile)."""

    tolerated: Mapping[str, float]


@dataclass(frozen=True)
class MetricFigures:
    """One metric over a set of answers: its value (and interval), and its change against unsteered on
    the same rows (and interval; NaN / None when the set is unsteered's own or has no rows to pair)."""

    value: float
    interval: Interval | None = None
    change: float = NAN
    change_interval: Interval | None = None


def clustered_interval(values: np.ndarray, rows: Sequence[AnswerRecord],
                       baseline: np.ndarray | None = None) -> Interval | None:
    """The mean's (or the mean paired difference's) 95 % interval resampling users and prompts, over the
    rows where the values are finite; None for fewer than two."""
    keep = np.isfinite(values) if baseline is None else np.isfinite(values) & np.isfinite(baseline)
    if keep.sum() < 2:
        return None
    kept = [a for a, k in zip(rows, keep) if k]
    return cluster_bootstrap(values[keep], [a.user_id for a in kept], [a.prompt_id for a in kept],
                             baseline=None if baseline is None else baseline[keep])


def finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else NAN


class AnswerMetric(ABC):
    """Subclass, set the class attributes, write `value`; register an instance in `registry.py`."""

    name: ClassVar[str]  # its CSV / JSON column, and what the code calls it
    header: ClassVar[str]  # the report's main-table column
    short_header: ClassVar[str]  # the command line's column
    with_interval: ClassVar[bool] = False  # the value's interval (its column `<name>_ci`)
    paired: ClassVar[bool] = False  # the change against unsteered (columns `<name>_delta`, `<name>_delta_ci`)
    columns_named: ClassVar[tuple[str, ...] | None] = None  # other column names: (value, its interval, change, …)

    @abstractmethod
    def value(self, answer: AnswerRecord, context: MetricContext) -> float:
        """The answer's value; NaN where it is not defined (left out of means)."""

    def aggregate(self, values: np.ndarray) -> float:
        """A cell's figure from its answers' values: the mean of the finite ones."""
        return finite_mean(values)

    def figures(self, rows: Sequence[AnswerRecord], base: Mapping[str, AnswerRecord],
                context: MetricContext) -> MetricFigures:
        """Over `rows`; the change against `base` (row id -> unsteered answer) where the metric is paired."""
        values = np.array([self.value(a, context) for a in rows], dtype=np.float64)
        interval = clustered_interval(values, rows) if self.with_interval and np.isfinite(values).any() else None
        change, change_interval = NAN, None
        paired = [a for a in rows if a.row_id in base]
        if self.paired and paired and not all(base[a.row_id] is a for a in paired):
            mine = np.array([self.value(a, context) for a in paired], dtype=np.float64)
            theirs = np.array([self.value(base[a.row_id], context) for a in paired], dtype=np.float64)
            both = np.isfinite(mine) & np.isfinite(theirs)
            change = float((mine[both] - theirs[both]).mean()) if both.any() else NAN
            change_interval = clustered_interval(mine, paired, theirs)
        return MetricFigures(self.aggregate(values), interval, change, change_interval)

    def column_names(self) -> tuple[str, str, str, str]:
        """(value, its interval, change, its interval) as CSV / JSON columns."""
        own = self.columns_named or ()
        default = (self.name, f"{self.name}_ci", f"{self.name}_delta", f"{self.name}_delta_ci")
        return (*own, *default[len(own):])  # type: ignore[return-value]

    def scalar_columns(self, f: MetricFigures) -> dict[str, object]:
        value, _, change, _ = self.column_names()
        return {value: f.value, **({change: f.change} if self.paired else {})}

    def interval_columns(self, f: MetricFigures) -> dict[str, object]:
        """Intervals that exist (a row without one leaves the column out, as the CSV's other intervals do)."""
        _, interval, _, change_interval = self.column_names()
        out: dict[str, object] = {}
        if self.paired and f.change_interval is not None:
            out[change_interval] = list(f.change_interval)
        if self.with_interval and f.interval is not None:
            out[interval] = list(f.interval)
        return out

    @abstractmethod
    def cell(self, f: MetricFigures, steered: bool) -> str:
        """The report's main-table cell (`steered`: False for the unsteered row itself)."""

    @abstractmethod
    def short_cell(self, f: MetricFigures, steered: bool) -> str:
        """The command line's cell."""


def fmt(value: float | None, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def share(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value + 0.0:.0f}%"


def share_with_interval(value: float, interval: Interval | None) -> str:
    return share(value) + (f" [{100 * interval[0]:.0f}–{100 * interval[1]:.0f}]" if interval else "")


def change_text(change: float, interval: Interval | None) -> str:
    """A paired change with its interval; * when the interval excludes 0 ("-" without an interval)."""
    if not math.isfinite(change) or interval is None:
        return "-"
    mark = " *" if interval[1] < 0 or interval[0] > 0 else ""
    return f"{change:+.2f} [{interval[0]:+.2f}, {interval[1]:+.2f}]{mark}"
