"""Everything the report shows about one sweep setup, computed once before any file is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steer_away.evaluation.report.analysis import (
    Answers,
    category_rows,
    change_sources,
    main_rows,
    ordered,
    sensitivity_effects,
)
from steer_away.evaluation.report.personalisation import head_to_head, population_reference, ppa_rows
from steer_away.evaluation.report.robustness import prompt_concentration
from steer_away.evaluation.store import StoredCell
from steer_away.evaluation.summary import (
    CategoryRow,
    ChangeSourceRow,
    HeadToHeadRow,
    MainRow,
    PPAResult,
    PPARow,
    PromptConcentration,
    SensitivityEffectRow,
)
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


def analyse(cells: Sequence[StoredCell], utility_correct: Mapping[str, dict[str, bool]], answers: Answers,
            ppa: PPAResult | None = None, no_option: Mapping[str, int] | None = None) -> ReportAnalysis:
    cells = ordered(cells)
    formats = {c.done_summary.utility_format for c in cells if c.done_summary.utility_n}
    baseline = next((c for c in cells if c.method == BASELINE), None)
    return ReportAnalysis(
        cells, main_rows(cells, utility_correct, answers, no_option), category_rows(cells), change_sources(cells, answers),
        sensitivity_effects(cells, answers),
        utility_questions=max((len(v) for v in utility_correct.values()), default=0),
        utility_format=formats.pop() if len(formats) == 1 else ("mixed" if formats else "letter"),
        concentration=prompt_concentration(answers.get(baseline.key, [])) if baseline else None,
        head_to_head=head_to_head(cells, answers), has_population=population_reference(cells) is not None,
        ppa=ppa_rows(ppa) if ppa else [], ppa_toxicity_ties=ppa.toxicity_ties if ppa else float("nan"))
