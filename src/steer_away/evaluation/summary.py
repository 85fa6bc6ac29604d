"""Typed results of a sweep: one cell's figures, and the rows of the report's tables.

A `CellSummary` is what a finished cell stores (as JSON, one key per field, so stores written
before it existed still load); the row types are what the report's analysis builds and what its
Markdown, CSV files, plots and the command line's table read. Row fields are named after the CSV
columns users read, in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

from steer_away.errors import InputError

NAN = float("nan")

Interval = tuple[float, float]


class SummaryFormatError(InputError):
    """A stored summary whose keys are not a cell summary's."""


@dataclass(frozen=True, kw_only=True)
class CellSummary:
    """One cell's figures over its answers and MMLU questions.

    `mae` is the six-attribute mean absolute error between an answer's scores and the user's
    preferred ones; `tox_dist` the headline |TOXICITY − the user's preferred TOXICITY|.
    Fields with defaults were added after the first stores were written; those stores read without them.
    """

    n: int  # answers
    users: int
    mae: float
    mae_by_category: dict[str, float]
    mae_by_sensitivity: dict[str, float] = field(default_factory=dict)
    tox_dist: float = NAN
    tox_dist_by_category: dict[str, float] = field(default_factory=dict)
    tox_dist_by_sensitivity: dict[str, float] = field(default_factory=dict)
    preferred_toxicity: dict[str, float] = field(default_factory=dict)  # user -> preferred TOXICITY
    sensitivity_of: dict[str, str] = field(default_factory=dict)  # user -> strict / moderate / tolerant
    toxicity_by_sensitivity: dict[str, float] = field(default_factory=dict)
    ppl_mean: float
    ppl_median: float
    empty_answers: int
    mean_tokens: float
    toxicity_mean: float
    mmlu_n: int
    mmlu_acc: float
    mmlu_ci: Interval
    mmlu_letter_mass: float = NAN

    def to_dict(self) -> dict[str, Any]:
        """The JSON the store keeps: one key per field, the interval as a list."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CellSummary:
        """Read a stored summary, refusing unknown keys and missing required ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SummaryFormatError(f"not a cell summary: unknown keys {unknown}")
        values = dict(raw)
        if "mmlu_ci" in values:
            low, high = values["mmlu_ci"]
            values["mmlu_ci"] = (low, high)
        try:
            return cls(**values)
        except TypeError as err:  # a required field is missing
            raise SummaryFormatError(f"not a cell summary: {err}") from err

    @property
    def headline_distance(self) -> float:
        """TOXICITY distance when the cell recorded it, else the six-attribute MAE."""
        return self.tox_dist if math.isfinite(self.tox_dist) else self.mae


class TableRow(Protocol):
    def columns(self) -> dict[str, object]:
        """The row as CSV / JSON columns, in the order users read them."""
        ...


def _columns(row: object, optional: Sequence[str] = ()) -> dict[str, object]:
    """Fields in order, intervals as lists; `optional` fields are left out while they are None."""
    out: dict[str, object] = {}
    for f in fields(row):  # type: ignore[arg-type]
        value = getattr(row, f.name)
        if f.name in optional and value is None:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class MainRow:
    """One cell in the main table: distances, Δ% against the unsteered cell, fluency, MMLU, intervals."""

    method: str
    alpha: float | None
    settings: str
    tox_dist: float
    tox_delta_pct: float
    mae: float  # six-attribute MAE
    delta_pct: float  # Δ% of the MAE
    ppl: float  # median answer perplexity
    ppl_mean: float
    mmlu: float
    mmlu_low: float
    mmlu_high: float
    toxicity: float  # mean TOXICITY of the answers
    n: int
    empty: int
    mmlu_letter_mass: float
    mmlu_turned_right: int
    mmlu_turned_wrong: int
    mmlu_mcnemar_p: float
    distinct2: float
    collapsed_share: float
    # user- and prompt-clustered 95 % intervals; None where too few rows (or no baseline to pair with)
    mae_ci: Interval | None = None
    toxicity_ci: Interval | None = None
    tox_dist_ci: Interval | None = None
    delta_ci: Interval | None = None
    tox_delta_ci: Interval | None = None
    collapsed: bool = False

    INTERVALS: ClassVar[tuple[str, ...]] = ("mae_ci", "toxicity_ci", "tox_dist_ci", "delta_ci", "tox_delta_ci")

    def columns(self) -> dict[str, object]:
        return _columns(self, self.INTERVALS)

    @property
    def headline_delta_pct(self) -> float:
        """The Δ% a plot shows: TOXICITY distance when the cells recorded it, else the 6-attribute MAE."""
        return self.tox_delta_pct if math.isfinite(self.tox_dist) else self.delta_pct


@dataclass(frozen=True)
class CategoryRow:
    """One prompt category: the baseline's distance and each steered cell's % change from it."""

    category: str
    metric: str  # "TOXICITY distance" or "MAE"
    baseline: float
    change_pct: dict[str, float]  # cell label -> % change, in the main table's order

    def columns(self) -> dict[str, object]:
        return {"category": self.category, "metric": self.metric, "baseline": self.baseline, **self.change_pct}


@dataclass(frozen=True)
class ChangeSourceRow:
    """Where a cell's change in mean TOXICITY comes from (collapsed answers, one prompt)."""

    method: str
    alpha: float | None
    settings: str
    toxicity_change: float
    from_collapsed: float  # share of the total change carried by collapsed answers
    clean_rows: int
    clean_steered: float
    clean_unsteered: float
    top_prompt: str
    top_prompt_share: float

    def columns(self) -> dict[str, object]:
        return _columns(self)


@dataclass(frozen=True)
class SensitivityEffectRow:
    """One user group under one cell: changes against unsteered on the same rows, with intervals."""

    method: str
    alpha: float | None
    settings: str
    group: str
    n: int
    users: int
    toxicity_change: float
    toxicity_change_ci: Interval
    distance_change: float
    distance_change_ci: Interval

    def columns(self) -> dict[str, object]:
        return _columns(self)


@dataclass(frozen=True)
class ReportTables:
    """What `write_report` wrote, for callers that print or check it."""

    main: list[MainRow]
    categories: list[CategoryRow]
    fingerprint: str | None
