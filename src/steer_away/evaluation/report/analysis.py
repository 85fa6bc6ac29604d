"""The report's statistics: orders cells, pairs them with the unsteered cell, and builds typed rows.

Nothing here formats text; Markdown, CSV and plots render these rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from steer_away.data.categories import CATEGORIES
from steer_away.evaluation.metrics.base import MetricContext
from steer_away.evaluation.metrics.functions import (
    COLLAPSED_CELL_SHARE,
    cluster_bootstrap,
    distinct_n,
    is_collapsed,
    mcnemar_exact,
    pct_change,
)
from steer_away.evaluation.metrics.registry import report_metrics
from steer_away.evaluation.report.robustness import one_prompt_robustness
from steer_away.evaluation.report.rows import CategoryRow, MainRow, MetricColumn, SensitivityEffectRow
from steer_away.evaluation.store import AnswerRecord, StoredCell
from steer_away.evaluation.summary import CellSummary, Interval
from steer_away.profiles import SENSITIVITIES
from steer_away.steering.registry import BASELINE, get_method, method_names

Answers = Mapping[str, Sequence[AnswerRecord]]  # cell key -> its stored answers


def latest_fingerprint(cells: Sequence[StoredCell]) -> str | None:
    done = [c for c in cells if c.finished_at]
    return max(done, key=lambda c: c.finished_at or 0.0).spec.fingerprint if done else None


def current_cells(cells: Sequence[StoredCell], fingerprint: str | None) -> list[StoredCell]:
    """The fingerprint's cells, one per method and arguments: a cell recomputed under a new key (its vector
    files changed) replaces the one computed before it, which the store keeps but the report must not list."""
    latest: dict[tuple[str, str], StoredCell] = {}
    for c in cells:
        if c.spec.fingerprint != fingerprint:
            continue
        ident = (c.method, json.dumps(c.spec.args, sort_keys=True, default=str))
        if ident not in latest or (c.finished_at or 0.0) >= (latest[ident].finished_at or 0.0):
            latest[ident] = c
    return list(latest.values())


def cell_order(method: str, settings: str | None, alpha: float | None) -> tuple:
    """The report's order: methods as registered, then settings, then α (none first)."""
    names = method_names()
    return (names.index(method) if method in names else len(names), method, settings or "",
            -math.inf if alpha is None else alpha)


def ordered(cells: Sequence[StoredCell]) -> list[StoredCell]:
    return sorted(cells, key=lambda c: cell_order(c.method, c.settings, c.alpha))


def alpha_text(method: str, alpha: float | None) -> str:
    """α as shown: a number; 'by <what picks it>' when the method picks it per row (logit steering:
    'by category'); '-' for a method with no strength (the baseline)."""
    if alpha is not None:
        return f"{alpha:g}"
    strength = get_method(method).args.strength if method in method_names() else None
    return "-" if strength is None else f"by {strength.unset}"


def named(method: str, settings: str) -> str:
    """A cell's first column in the report's tables (α has its own): 'rerank candidates=1'."""
    return method + (f" {settings}" if settings else "")


def label(method: str, alpha: float | None, settings: str) -> str:
    """How a cell is named in the report's text: 'caa-population α=0.5 gate=prefill'; a method without a
    strength shows none ('rerank candidates=1')."""
    strength = alpha_text(method, alpha)
    return named(method + ("" if strength == "-" else f" α={strength}"), settings)


def cell_label(cell: StoredCell) -> str:
    return label(cell.method, cell.alpha, cell.settings)


def paired_utility(answers: dict[str, bool], baseline: dict[str, bool]) -> tuple[int, int, float]:
    """(questions turned right, turned wrong, McNemar p) against the baseline, on the questions both answered."""
    shared = set(answers) & set(baseline)
    to_right = sum(1 for q in shared if answers[q] and not baseline[q])
    to_wrong = sum(1 for q in shared if baseline[q] and not answers[q])
    return to_right, to_wrong, mcnemar_exact(to_right, to_wrong)


@dataclass(frozen=True)
class Intervals:
    """A cell's user- and prompt-clustered 95 % intervals; None where they cannot be computed."""

    mae_ci: Interval | None = None
    toxicity_ci: Interval | None = None
    tox_dist_ci: Interval | None = None
    delta_ci: Interval | None = None
    tox_delta_ci: Interval | None = None


def intervals(rows: Sequence[AnswerRecord], base_rows: Sequence[AnswerRecord],
              preferred: dict[str, float] | None = None) -> Intervals:
    """User- and prompt-clustered 95 % bootstrap intervals for MAE, mean TOXICITY and Δ% MAE, and, given
    each user's preferred TOXICITY, for the TOXICITY distance and its Δ%."""
    if len(rows) < 2:
        return Intervals()
    users, prompts = [a.user_id for a in rows], [a.prompt_id for a in rows]
    mae_ci = cluster_bootstrap(np.array([a.attribute_mae for a in rows]), users, prompts)
    toxicity_ci = cluster_bootstrap(np.array([a.toxicity[0] for a in rows]), users, prompts)
    tox_dist_ci = None

    def tox_distance(a: AnswerRecord) -> float:
        return abs(a.toxicity[0] - (preferred or {})[a.user_id])

    if preferred:
        known = [a for a in rows if a.user_id in preferred]
        if len(known) >= 2:
            tox_dist_ci = cluster_bootstrap(np.array([tox_distance(a) for a in known]),
                                            [a.user_id for a in known], [a.prompt_id for a in known])
    base = {a.row_id: a for a in base_rows}
    paired = [a for a in rows if a.row_id in base and (not preferred or a.user_id in preferred)]
    if not paired or base_rows is rows:
        return Intervals(mae_ci, toxicity_ci, tox_dist_ci)

    def relative_change(value: Callable[[AnswerRecord], float]) -> Interval:
        return cluster_bootstrap(
            np.array([value(a) for a in paired]), [a.user_id for a in paired], [a.prompt_id for a in paired],
            baseline=np.array([value(base[a.row_id]) for a in paired]), relative=True)

    return Intervals(mae_ci, toxicity_ci, tox_dist_ci, relative_change(lambda a: a.attribute_mae),
                     relative_change(tox_distance) if preferred else None)


@dataclass(frozen=True)
class AnswerQuality:
    distinct2: float  # mean share of distinct word bigrams per answer
    collapsed_share: float  # share of answers flagged as collapsed (looping, repeated phrases)


def quality(answers: Sequence[str]) -> AnswerQuality:
    """Mean distinct-2 of the answers and the share flagged as collapsed (looping, repeated phrases)."""
    d2 = [distinct_n(a, 2) for a in answers]
    d2 = [v for v in d2 if not math.isnan(v)]
    flagged = sum(is_collapsed(a) for a in answers)
    return AnswerQuality(sum(d2) / len(d2) if d2 else float("nan"),
                         flagged / len(answers) if answers else float("nan"))


def _baseline(cells: Sequence[StoredCell]) -> StoredCell | None:
    return next((c for c in cells if c.method == BASELINE), None)


def main_rows(cells: Sequence[StoredCell], utility_correct: Mapping[str, dict[str, bool]] | None = None,
              answers: Answers | None = None, no_option: Mapping[str, int] | None = None) -> list[MainRow]:
    """One row per cell in the report's order; Δ% against the unsteered cell.
    `utility_correct` (cell key -> question id -> right?) adds the paired utility test against the baseline;
    `no_option` (cell key -> questions where the method ruled out every option) is counted from the records;
    `answers` adds intervals, repetition, the collapse flag and Δ% without the most influential prompt."""
    cells = ordered(cells)
    baseline = _baseline(cells)
    base = baseline.done_summary if baseline else None
    utility_correct = utility_correct or {}
    answers = answers or {}
    base_utility = utility_correct.get(baseline.key, {}) if baseline else {}
    rows = []
    for c in cells:
        s = c.done_summary
        turned = paired_utility(utility_correct.get(c.key, {}), base_utility) if base_utility and c is not baseline \
            else (0, 0, float("nan"))
        answered = answers.get(c.key, [])
        shares = quality([a.answer for a in answered])
        base_rows = answers.get(baseline.key, []) if baseline and c is not baseline else []
        spread = intervals(answered, base_rows, s.preferred_toxicity)
        robust = one_prompt_robustness(answered, base_rows, s.preferred_toxicity, spread.tox_delta_ci)
        by_row, context = {a.row_id: a for a in base_rows}, MetricContext(s.tolerated_toxicity)
        metrics = tuple(MetricColumn(m, m.figures(answered, by_row, context)) for m in report_metrics())
        rows.append(MainRow(
            method=c.method, alpha=c.alpha, settings=c.settings,
            tox_dist=s.tox_dist, tox_delta_pct=pct_change(s.tox_dist, base.tox_dist) if base else float("nan"),
            tox_delta_wo_top_pct=robust.pct, top_prompt_id=robust.prompt_id, top_prompt=robust.prompt,
            fragile=robust.fragile,
            mae=s.mae, delta_pct=pct_change(s.mae, base.mae) if base else float("nan"),
            ppl=s.ppl_median, ppl_mean=s.ppl_mean,
            utility=s.utility_acc, utility_low=s.utility_ci[0], utility_high=s.utility_ci[1],
            toxicity=s.toxicity_mean, n=s.n, empty=s.empty_answers, utility_letter_mass=s.utility_letter_mass,
            utility_no_option=(no_option or {}).get(c.key, 0),
            utility_turned_right=turned[0], utility_turned_wrong=turned[1], utility_p=turned[2],
            distinct2=shares.distinct2, collapsed_share=shares.collapsed_share,
            cost_ratio=s.seconds_per_answer / base.seconds_per_answer if base else float("nan"),
            cost_same_run=bool(base and set(s.timed_runs) & set(base.timed_runs)),
            mae_ci=spread.mae_ci, toxicity_ci=spread.toxicity_ci, tox_dist_ci=spread.tox_dist_ci,
            delta_ci=spread.delta_ci, tox_delta_ci=spread.tox_delta_ci, tox_delta_wo_top_ci=robust.ci,
            collapsed=bool(shares.collapsed_share >= COLLAPSED_CELL_SHARE), metrics=metrics,
        ))
    return rows


def category_rows(cells: Sequence[StoredCell]) -> list[CategoryRow]:
    """Per prompt category: the baseline's distance (TOXICITY distance when recorded, else MAE) and each
    steered cell's % change from it."""
    cells = ordered(cells)
    baseline = _baseline(cells)
    base = baseline.done_summary if baseline else None
    use_tox = bool(base and base.tox_dist_by_category)

    def by_category(s: CellSummary) -> dict[str, float]:
        return s.tox_dist_by_category if use_tox else s.mae_by_category

    rows = []
    for category in CATEGORIES:
        base_value = by_category(base).get(category, float("nan")) if base else float("nan")
        changes = {cell_label(c): pct_change(by_category(c.done_summary).get(category, float("nan")), base_value)
                   for c in cells if c is not baseline}
        rows.append(CategoryRow(category, "TOXICITY distance" if use_tox else "MAE", base_value, changes))
    return rows


def _baseline_answers(cells: Sequence[StoredCell], answers: Answers
                      ) -> tuple[StoredCell | None, dict[str, AnswerRecord]]:
    """The unsteered cell and its answers by row id (None and {} when the sweep has no baseline)."""
    baseline = _baseline(cells)
    if baseline is None:
        return None, {}
    return baseline, {a.row_id: a for a in answers.get(baseline.key, [])}


@dataclass(frozen=True)
class PairedComparison:
    """One cell's rows against a reference cell's answers to the same rows (the baseline, or population
    steering): means, and each difference (cell − reference) with a user- and prompt-clustered interval."""

    n: int
    users: int
    toxicity: float
    reference_toxicity: float
    toxicity_ci: Interval
    tox_dist: float
    reference_tox_dist: float
    tox_dist_ci: Interval
    violations: float = float("nan")  # share of answers more toxic than their user tolerates
    reference_violations: float = float("nan")
    violations_ci: Interval | None = None


def paired_comparison(rows: Sequence[AnswerRecord], reference: Mapping[str, AnswerRecord],
                      preferred: Mapping[str, float], tolerated: Mapping[str, float] | None = None
                      ) -> PairedComparison | None:
    """`rows` paired on row id with `reference`; None when fewer than two rows pair. With `tolerated`
    (user -> the most TOXICITY they tolerate), boundary violations are compared too."""
    paired = [a for a in rows if a.row_id in reference and a.user_id in preferred]
    if len(paired) < 2:
        return None
    users, prompts = [a.user_id for a in paired], [a.prompt_id for a in paired]
    tox = np.array([a.toxicity[0] for a in paired])
    ref_tox = np.array([reference[a.row_id].toxicity[0] for a in paired])
    pref = np.array([preferred[a.user_id] for a in paired])
    dist, ref_dist = np.abs(tox - pref), np.abs(ref_tox - pref)
    violations: dict[str, object] = {}
    if tolerated and all(a.user_id in tolerated for a in paired):
        limit = np.array([tolerated[a.user_id] for a in paired])
        mine, theirs = (tox > limit).astype(float), (ref_tox > limit).astype(float)
        violations = {"violations": float(mine.mean()), "reference_violations": float(theirs.mean()),
                      "violations_ci": cluster_bootstrap(mine, users, prompts, baseline=theirs)}
    return PairedComparison(len(paired), len(set(users)), float(tox.mean()), float(ref_tox.mean()),
                            cluster_bootstrap(tox, users, prompts, baseline=ref_tox),
                            float(dist.mean()), float(ref_dist.mean()),
                            cluster_bootstrap(dist, users, prompts, baseline=ref_dist), **violations)  # type: ignore[arg-type]


def sensitivity_effects(cells: Sequence[StoredCell], answers: Answers) -> list[SensitivityEffectRow]:
    """Per user group: the change in mean TOXICITY and in TOXICITY distance against unsteered on the same
    rows, with user- and prompt-clustered 95 % intervals (an interval that excludes 0 is a measured effect)."""
    baseline, base = _baseline_answers(cells, answers)
    if baseline is None:
        return []
    out = []
    for c in ordered(cells):
        groups = c.done_summary.sensitivity_of
        preferred = c.done_summary.preferred_toxicity
        if c is baseline or not groups or not preferred:
            continue
        for group in SENSITIVITIES:
            pair = paired_comparison([a for a in answers.get(c.key, []) if groups.get(a.user_id) == group],
                                     base, preferred)
            if pair is None:
                continue
            out.append(SensitivityEffectRow(
                c.method, c.alpha, c.settings, group, n=pair.n, users=pair.users,
                toxicity_change=pair.toxicity - pair.reference_toxicity, toxicity_change_ci=pair.toxicity_ci,
                distance_change=pair.tox_dist - pair.reference_tox_dist, distance_change_ci=pair.tox_dist_ci))
    return out
