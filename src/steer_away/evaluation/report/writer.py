"""`write_report`: reads one sweep setup's cells from the store, analyses them, writes every file."""

from __future__ import annotations

import json
from pathlib import Path

from steer_away.errors import InputError
from steer_away.evaluation.report.analysis import current_cells, latest_fingerprint
from steer_away.evaluation.report.csv_files import write_csv
from steer_away.evaluation.report.findings import analyse
from steer_away.evaluation.report.markdown import report_markdown, sample_answers
from steer_away.evaluation.report.plots import plot_categories, plot_sweep
from steer_away.evaluation.report.rows import ReportTables
from steer_away.evaluation.store import ResultsStore
from steer_away.evaluation.summary import PPAResult


def write_report(store_path: str | Path, out: str | Path, fingerprint: str | None = None,
                 ppa: PPAResult | None = None, title: str = "steer-away report",
                 notes: str = "", cards: str | Path | None = None) -> ReportTables:
    """Write report.md, main.csv, categories.csv, change_sources.csv, sensitivity_effects.csv,
    head_to_head.csv, guards.csv, ppa.csv, summary.json and the PNGs for one fingerprint (default: the latest); return
    the tables.
    `cards`: the vector store's cards.json (default: the one beside the store, if any)."""
    out = Path(out)
    cards_path = Path(cards) if cards else Path(store_path).parent / "vectors" / "cards.json"
    store = ResultsStore(store_path, create=False)  # a store it refuses leaves no empty output folder behind
    try:
        cells = store.cells(only_done=True)
        fingerprint = fingerprint or latest_fingerprint(cells)
        cells = current_cells(cells, fingerprint)
        if not cells:
            raise InputError(f"{store_path} has no finished cells to report")
        utility = {c.key: store.mmlu(c.key) for c in cells}
        answers = {c.key: store.answers(c.key) for c in cells}
    finally:
        store.close()
    out.mkdir(parents=True, exist_ok=True)
    utility_correct = {key: {r.question_id: r.correct for r in records} for key, records in utility.items()}
    no_option = {key: sum(1 for r in records if r.predicted < 0) for key, records in utility.items()}
    analysis = analyse(cells, utility_correct, answers, ppa, no_option)
    collapsed = {(r.method, r.alpha, r.settings) for r in analysis.main if r.collapsed}
    write_csv(out / "main.csv", analysis.main)
    write_csv(out / "categories.csv", analysis.categories)
    write_csv(out / "change_sources.csv", analysis.change_sources)
    write_csv(out / "sensitivity_effects.csv", analysis.sensitivity_effects)
    write_csv(out / "head_to_head.csv", analysis.head_to_head)
    write_csv(out / "guards.csv", analysis.guards)
    write_csv(out / "ppa.csv", analysis.ppa)
    plots = plot_sweep(analysis.main, out) + plot_categories(analysis.categories, out)
    samples = sample_answers([c for c in cells if (c.method, c.alpha, c.settings) not in collapsed], answers)
    (out / "report.md").write_text(
        report_markdown(analysis, title=title, notes=notes, cards=cards_path if cards_path.is_file() else None,
                        plots=plots, samples=samples), encoding="utf-8")
    concentration = analysis.concentration
    (out / "summary.json").write_text(json.dumps({
        "fingerprint": fingerprint, "main": [r.columns() for r in analysis.main],
        "prompt_concentration": concentration.columns() if concentration else None,
        "head_to_head": [r.columns() for r in analysis.head_to_head], "ppa": [r.columns() for r in analysis.ppa],
        "ppa_toxicity_ties": analysis.ppa_toxicity_ties}, indent=1, default=str))
    return ReportTables(analysis.main, analysis.categories, fingerprint, analysis.head_to_head, analysis.ppa,
                        concentration)
