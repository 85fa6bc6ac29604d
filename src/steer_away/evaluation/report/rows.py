"""The rows of the report's tables: what the analysis builds and what its Markdown, CSV files, plots and
the command line's tables read. Row fields are named after the CSV columns users read, in the same order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar, Protocol

from steer_away.evaluation.metrics.base import AnswerMetric, MetricFigures
from steer_away.evaluation.summary import NAN, Interval

CHANGE_BINS = (5.0, 15.0)  # the CAA study's colour bins for |% change|: ≤ 5, 5-15, ≥ 15


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
class MetricColumn:
    """A registered metric's figures in one row of the main table."""

    metric: AnswerMetric
    figures: MetricFigures


@dataclass(frozen=True)
class MainRow:
    """One cell in the main table: distances, Δ% against the unsteered cell (also without the prompt that
    carries most of it), fluency, utility, intervals."""

    method: str
    alpha: float | None
    settings: str
    tox_dist: float
    tox_delta_pct: float
    tox_delta_wo_top_pct: float  # Δ% of TOXICITY distance with the most influential prompt left out
    top_prompt_id: str  # that prompt ("" where there is no second prompt to keep)
    top_prompt: str  # its text
    fragile: bool  # leaving that prompt out flips the sign of Δ% or whether its interval excludes 0
    mae: float  # all-attribute MAE
    delta_pct: float  # Δ% of the MAE
    ppl: float  # median answer perplexity
    ppl_mean: float
    utility: float  # multiple-choice accuracy (cloze or letter format, as the cells' summaries say)
    utility_low: float
    utility_high: float
    toxicity: float  # mean TOXICITY of the answers
    n: int
    empty: int
    utility_letter_mass: float
    utility_no_option: int  # cloze: questions where the method ruled out every option
    utility_turned_right: int
    utility_turned_wrong: int
    utility_p: float  # exact McNemar against unsteered on the same questions
    distinct2: float
    collapsed_share: float
    cost_ratio: float  # seconds per generated answer ÷ unsteered's (NaN: either was not timed)
    cost_same_run: bool  # both were timed in one sweep run (else machines or load may differ)
    # user- and prompt-clustered 95 % intervals; None where too few rows (or no baseline to pair with)
    mae_ci: Interval | None = None
    toxicity_ci: Interval | None = None
    tox_dist_ci: Interval | None = None
    delta_ci: Interval | None = None
    tox_delta_ci: Interval | None = None
    tox_delta_wo_top_ci: Interval | None = None
    collapsed: bool = False
    metrics: tuple[MetricColumn, ...] = ()  # every registered per-answer metric (evaluation/metrics/registry.py)

    INTERVALS: ClassVar[tuple[str, ...]] = ("mae_ci", "toxicity_ci", "tox_dist_ci", "delta_ci", "tox_delta_ci",
                                            "tox_delta_wo_top_ci")

    def columns(self) -> dict[str, object]:
        """The core figures, each metric's values, the core intervals, each metric's intervals, the collapse flag."""
        core = _columns(self, self.INTERVALS)
        core.pop("metrics")
        collapsed = core.pop("collapsed")
        intervals = {name: core.pop(name) for name in self.INTERVALS if name in core}
        out = core
        for column in self.metrics:
            out |= column.metric.scalar_columns(column.figures)
        out |= intervals
        for column in self.metrics:
            out |= column.metric.interval_columns(column.figures)
        return out | {"collapsed": collapsed}

    def metric(self, name: str) -> MetricFigures | None:
        return next((column.figures for column in self.metrics if column.metric.name == name), None)

    @property
    def headline_delta_pct(self) -> float:
        """The Δ% a plot shows: TOXICITY distance when the cells recorded it, else the all-attribute MAE."""
        return self.tox_delta_pct if math.isfinite(self.tox_dist) else self.delta_pct


@dataclass(frozen=True)
class GuardFigures:
    """A set of answers' guards (`states.guard_figures`): relevance and its change against unsteered on the
    same rows, shares refused / off-request / collapsed, boundary violations."""

    relevance: float
    relevance_delta: float  # paired with unsteered on the same rows
    relevance_delta_ci: Interval | None
    refusal_share: float
    off_request_share: float
    collapsed_share: float
    violation_share: float
    violation_share_ci: Interval | None


@dataclass(frozen=True)
class GuardRow:
    """One cell's guards over one scope: all its answers, a user group or a prompt category."""

    method: str
    alpha: float | None
    settings: str
    scope: str  # "all", a sensitivity group or a prompt category
    n: int
    figures: GuardFigures

    def columns(self) -> dict[str, object]:
        own = {"method": self.method, "alpha": self.alpha, "settings": self.settings, "scope": self.scope, "n": self.n}
        return own | _columns(self.figures, ("relevance_delta_ci", "violation_share_ci"))


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
    """Where a cell's change in mean TOXICITY comes from: the share of it carried by the steered answers in
    each state (collapsed, refused, off-request, intact: see report/guards.py), the change on the intact ones
    alone (the claim), and the one prompt that moved most."""

    method: str
    alpha: float | None
    settings: str
    toxicity_change: float
    from_collapsed: float  # share of the total change carried by collapsed answers
    from_refused: float
    from_off_request: float
    from_intact: float
    intact_rows: int
    intact_steered: float  # mean TOXICITY of the intact steered answers ...
    intact_unsteered: float  # ... and of the unsteered answers to the same rows
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
class HeadToHeadRow:
    """A method whose answers depend on the user against population steering, on the same rows of one
    user group ("all": every user): differences are cell − population, with user- and prompt-clustered
    95 % intervals; a negative distance difference is closer to the users than population steering."""

    method: str
    alpha: float | None
    settings: str
    population_alpha: float | None
    group: str
    n: int
    users: int
    tox_dist: float
    population_tox_dist: float
    tox_dist_diff: float
    tox_dist_diff_ci: Interval
    toxicity: float
    population_toxicity: float
    toxicity_diff: float
    toxicity_diff_ci: Interval
    violation_share: float = NAN  # answers more toxic than their user tolerates ...
    population_violation_share: float = NAN
    violation_diff: float = NAN  # ... cell − population, with its interval
    violation_diff_ci: Interval | None = None

    def columns(self) -> dict[str, object]:
        return _columns(self, ("violation_diff_ci",))


@dataclass(frozen=True)
class PromptConcentration:
    """How the unsteered answers' TOXICITY spreads over prompts: a table whose effect lives in one prompt
    cannot carry a general claim."""

    prompts: int
    top_prompt_id: str
    top_prompt: str
    top_share: float  # the largest share of the total TOXICITY mass one prompt carries
    toxic_prompts: int  # prompts whose mean unsteered TOXICITY exceeds `threshold`
    threshold: float
    shares: dict[str, float]  # prompt id -> its share of the TOXICITY mass

    def columns(self) -> dict[str, object]:
        return _columns(self)


@dataclass(frozen=True)
class PPARow:
    """One predictor in the report: accuracy with a user-clustered 95 % interval, and the paired difference
    from the population predictor on the pairs both predict (None for the population and chance rows)."""

    predictor: str
    pairs: int
    users: int
    accuracy: float
    accuracy_ci: Interval | None
    diff_vs_population: float | None = None
    diff_vs_population_ci: Interval | None = None

    def columns(self) -> dict[str, object]:
        return _columns(self)


@dataclass(frozen=True)
class ReportTables:
    """What `write_report` wrote, for callers that print or check it."""

    main: list[MainRow]
    categories: list[CategoryRow]
    fingerprint: str | None
    head_to_head: list[HeadToHeadRow] = field(default_factory=list)
    ppa: list[PPARow] = field(default_factory=list)
    concentration: PromptConcentration | None = None
