"""Everything the report shows about one sweep setup, computed once before any file is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steer_away.evaluation.report.analysis import (
    Answers,
    category_rows,
    main_rows,
    ordered,
    sensitivity_effects,
)
from steer_away.evaluation.report.guards import Verdict, best_under_guards, change_sources, guard_rows
from steer_away.evaluation.report.personalisation import head_to_head, population_reference, ppa_rows
from steer_away.evaluation.report.robustness import prompt_concentration
from steer_away.evaluation.report.rows import (
    CategoryRow,
    ChangeSourceRow,
    GuardRow,
    HeadToHeadRow,
    MainRow,
    PPARow,
    PromptConcentration,
    SensitivityEffectRow,
)
from steer_away.evaluation.store import StoredCell
from steer_away.evaluation.summary import PPAResult
from steer_away.steering.registry import BASELINE


@dataclass(frozen=True)
class ReportAnalysis:
    """Everything the report shows about one fingerprint's cells, before any formatting."""

    cells: list[StoredCell]  # in the report's order
    main: list[MainRow]
    categories: list[CategoryRow]
    change_sources: list[ChangeSourceRow]
    sensitivity_effects: list[SensitivityEffectRow]
    utility_questions: int  # the most questions any cell answered
    utility_format: str  # how the questions were asked ("cloze" or "letter"; "mixed" if cells differ)
    concentration: PromptConcentration | None  # None without unsteered answers
    head_to_head: list[HeadToHeadRow]
    has_population: bool  # whether a population cell was there to compare with
    ppa: list[PPARow]
    ppa_toxicity_ties: float  # NaN without PPA
    guards: list[GuardRow]  # relevance, refusals, off-request, collapse and violations per cell, group, category
    verdict: Verdict  # the best cell under the guards


def analyse(cells: Sequence[StoredCell], utility_correct: Mapping[str, dict[str, bool]], answers: Answers,
            ppa: PPAResult | None = None, no_option: Mapping[str, int] | None = None) -> ReportAnalysis:
    cells = ordered(cells)
    formats = {c.done_summary.utility_format for c in cells if c.done_summary.utility_n}
    baseline = next((c for c in cells if c.method == BASELINE), None)
    main = main_rows(cells, utility_correct, answers, no_option)
    return ReportAnalysis(
        cells, main, category_rows(cells), change_sources(cells, answers),
        sensitivity_effects(cells, answers),
        utility_questions=max((len(v) for v in utility_correct.values()), default=0),
        utility_format=formats.pop() if len(formats) == 1 else ("mixed" if formats else "letter"),
        concentration=prompt_concentration(answers.get(baseline.key, [])) if baseline else None,
        head_to_head=head_to_head(cells, answers), has_population=population_reference(cells) is not None,
        ppa=ppa_rows(ppa) if ppa else [], ppa_toxicity_ties=ppa.toxicity_ties if ppa else float("nan"),
        guards=guard_rows(cells, answers), verdict=best_under_guards(main))
