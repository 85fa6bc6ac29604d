"""Typed results of a sweep: one cell's figures and PPA's outcomes.

A `CellSummary` is what a finished cell stores (built by `summarise`; as JSON, one key per field, so
stores written before it existed still load); `PPAResult` holds each predictor's outcome per held-out
pair. The report's rows are in `report/rows.py`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from steer_away.errors import InputError
from steer_away.evaluation.metrics.functions import finite, mean_by, wilson_interval

NAN = float("nan")

Interval = tuple[float, float]


class SummaryFormatError(InputError):
    """A stored summary whose keys are not a cell summary's."""


_OLD_KEYS = {"mmlu_n": "utility_n", "mmlu_acc": "utility_acc", "mmlu_ci": "utility_ci",
             "mmlu_letter_mass": "utility_letter_mass"}  # stores written before utility had its name


@dataclass(frozen=True)
class GenerationCost:
    """Seconds per generated answer in one cell (NaN: not timed), and the sweep runs that timed it."""

    seconds_per_answer: float
    runs: list[str]


@dataclass(frozen=True, kw_only=True)
class CellSummary:
    """One cell's figures over its answers and utility (multiple-choice) questions.

    `mae` is the all-attribute mean absolute error between an answer's scores and the user's
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
    utility_n: int
    utility_acc: float
    utility_ci: Interval
    utility_letter_mass: float = NAN  # letter format only: probability on A-D at all
    utility_format: str = "letter"  # cloze (acc_norm) or letter; every store before cloze asked for letters
    seconds_per_answer: float = NAN  # generating one answer (decoding and the method's own scorer calls)
    timed_runs: list[str] = field(default_factory=list)  # the sweep runs that measured it
    tolerated_toxicity: dict[str, float] = field(default_factory=dict)  # user -> the most TOXICITY they tolerate

    def to_dict(self) -> dict[str, Any]:
        """The JSON the store keeps: one key per field, the interval as a list."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CellSummary:
        """Read a stored summary (older `mmlu_*` keys read as `utility_*`), refusing unknown keys and
        missing required ones."""
        values = {_OLD_KEYS.get(k, k): v for k, v in raw.items()}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise SummaryFormatError(f"not a cell summary: unknown keys {unknown}")
        kinds = {f.name: str(f.type) for f in fields(cls)}
        for name, value in values.items():
            if not _of_kind(value, kinds[name]):
                raise SummaryFormatError(f"not a cell summary: {name} must be {kinds[name]}, got {value!r}"[:300])
        if "utility_ci" in values:
            low, high = values["utility_ci"]
            values["utility_ci"] = (low, high)
        try:
            return cls(**values)
        except TypeError as err:  # a required field is missing
            raise SummaryFormatError(f"not a cell summary: {err}") from err

    @property
    def headline_distance(self) -> float:
        """TOXICITY distance when the cell recorded it, else the all-attribute MAE."""
        return self.tox_dist if math.isfinite(self.tox_dist) else self.mae


def _of_kind(value: object, kind: str) -> bool:
    """Whether a stored value is of a summary field's declared kind (as written: "float", "dict[str, str]")."""
    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return number(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "Interval":
        return isinstance(value, (list, tuple)) and len(value) == 2 and all(number(v) for v in value)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind.startswith("dict[str, "):
        inner = kind.removeprefix("dict[str, ").removesuffix("]")
        return isinstance(value, dict) and all(isinstance(k, str) and (number(v) if inner == "float" else
                                                                      isinstance(v, str)) for k, v in value.items())
    return True


class ScoredAnswer(Protocol):
    """What a summary reads of a stored answer (the store's `AnswerRecord`, which imports this module)."""

    user_id: str
    category: str
    answer: str
    toxicity: list[float]
    attribute_mae: float
    perplexity: float
    n_tokens: int


class UtilityAnswer(Protocol):
    """What a summary reads of a stored utility answer (the store's `MMLURecord`)."""

    correct: bool
    letter_mass: float


def tox_distances(answers: Sequence[ScoredAnswer], preferred: Mapping[str, float]) -> list[float]:
    """|TOXICITY of the answer − the user's preferred TOXICITY|: the headline distance (the seeds' metric);
    the all-attribute mean (`attribute_mae`) is kept beside it."""
    return [abs(a.toxicity[0] - preferred[a.user_id]) if a.user_id in preferred else NAN for a in answers]


def summarise(answers: Sequence[ScoredAnswer], utility: Sequence[UtilityAnswer],
              sensitivity: Mapping[str, str] | None = None, preferred: Mapping[str, float] | None = None, *,
              utility_format: str, cost: GenerationCost | None = None,
              tolerated: Mapping[str, float] | None = None) -> CellSummary:
    """Cell figures; `sensitivity` (user -> strict/moderate/tolerant) adds the per-group breakdown,
    `preferred` (user -> preferred TOXICITY) the TOXICITY distance, `tolerated` (user -> the most TOXICITY
    they tolerate) what boundary violations are measured against; `utility_format` says how the
    utility questions were asked (the sweep's checked `utility` setting: cloze or letter); `cost` how
    long its answers took to generate."""
    distances = [a.attribute_mae for a in answers]
    groups = [(sensitivity or {}).get(a.user_id, "unknown") for a in answers]
    answered = {a.user_id for a in answers}
    preferred = {u: v for u, v in (preferred or {}).items() if u in answered}
    tox = tox_distances(answers, preferred)
    ppl = finite(a.perplexity for a in answers)
    correct = sum(r.correct for r in utility)
    low, high = wilson_interval(correct, len(utility))
    return CellSummary(
        n=len(answers), users=len(answered),
        mae=float(np.mean(distances)) if distances else NAN,
        mae_by_category=mean_by(distances, [a.category for a in answers]),
        mae_by_sensitivity=mean_by(distances, groups),
        tox_dist=float(np.nanmean(tox)) if preferred and answers else NAN,
        tox_dist_by_category=mean_by(tox, [a.category for a in answers]) if preferred else {},
        tox_dist_by_sensitivity=mean_by(tox, groups) if preferred else {},
        preferred_toxicity=preferred,
        tolerated_toxicity={u: v for u, v in (tolerated or {}).items() if u in answered},
        sensitivity_of={u: g for u, g in (sensitivity or {}).items() if u in answered},
        toxicity_by_sensitivity=mean_by([a.toxicity[0] for a in answers], groups),
        ppl_mean=float(ppl.mean()) if ppl.size else NAN,
        ppl_median=float(np.median(ppl)) if ppl.size else NAN,
        empty_answers=sum(1 for a in answers if not a.answer.strip()),
        mean_tokens=float(np.mean([a.n_tokens for a in answers])) if answers else 0.0,
        toxicity_mean=float(np.mean([a.toxicity[0] for a in answers])) if answers else NAN,
        utility_n=len(utility), utility_acc=correct / len(utility) if utility else NAN, utility_ci=(low, high),
        utility_letter_mass=float(np.nanmean([r.letter_mass for r in utility]))
        if utility and utility_format != "cloze" else NAN,
        utility_format=utility_format,
        seconds_per_answer=cost.seconds_per_answer if cost else NAN, timed_runs=list(cost.runs) if cost else [],
    )


@dataclass(frozen=True)
class PredictorOutcomes:
    """One PPA predictor's outcome on each held-out pair it predicts: 1 right, 0 wrong, 0.5 a tie."""

    name: str
    pairs: list[int]  # indices into the result's `pair_users`
    correct: list[float]


PPA_FORMAT = 2  # bump when PPAResult's JSON changes, so cached results are recomputed, not misread


@dataclass(frozen=True)
class PPAResult:
    """Personalised preference accuracy per predictor, pair by pair, so that predictors compare on the same
    pairs. `population` names the predictor every other one is compared with; `chance` one whose accuracy
    is a fair coin's expectation (no outcomes)."""

    pair_users: list[str]
    predictors: list[PredictorOutcomes]
    population: str
    chance: str
    toxicity_ties: float  # share of pairs whose two answers' toxicity is (nearly) the same

    def to_dict(self) -> dict[str, Any]:
        return {"format": PPA_FORMAT, "pair_users": self.pair_users, "population": self.population,
                "chance": self.chance, "toxicity_ties": self.toxicity_ties,
                "predictors": [{"name": p.name, "pairs": p.pairs, "correct": p.correct} for p in self.predictors]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PPAResult | None:
        """The stored result, or None when it was written in another format (recompute it)."""
        if raw.get("format") != PPA_FORMAT:
            return None
        return cls(list(raw["pair_users"]), [PredictorOutcomes(p["name"], list(p["pairs"]), list(p["correct"]))
                                             for p in raw["predictors"]],
                   raw["population"], raw["chance"], float(raw["toxicity_ties"]))
