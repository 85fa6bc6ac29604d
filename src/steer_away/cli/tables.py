"""Tables the command line prints from a sweep's report, on stdout (results, not progress)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from steer_away.console import results
from steer_away.evaluation.metrics.registry import report_metrics
from steer_away.evaluation.report.rows import MainRow, PPARow
from steer_away.steering.registry import BASELINE


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f}%"


def print_main_table(main: Sequence[MainRow], title: str) -> None:
    """The report's main table, short enough for a terminal: one line per cell; † marks a Δ% that rests on one
    prompt, * a relevance change whose interval excludes 0, ⚠ a cell with too many collapsed answers. The
    settings column shows only when a cell has settings."""
    table = Table(title=title)
    metrics = report_metrics()
    with_settings = any(r.settings for r in main)
    columns = ["method", "α"] + (["settings"] if with_settings else []) + [
        "TOX dist ↓", "Δ%", "Δ% w/o top", "PPL ↓", "collapsed", *(m.short_header for m in metrics), "utility",
        "TOXICITY", "n"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "settings") else "right",
                         no_wrap=column == "method")
    for r in main:
        steered = r.method != BASELINE
        delta = _pct(r.tox_delta_pct) + (" †" if r.fragile else "") if steered else "-"
        utility = "-" if math.isnan(r.utility) else f"{100 * r.utility:.1f}%"
        collapsed = "-" if math.isnan(r.collapsed_share) else \
            f"{100 * r.collapsed_share:.0f}%" + (" ⚠" if r.collapsed else "")
        measured = [(m, r.metric(m.name)) for m in metrics]
        shown = ["-" if f is None else m.short_cell(f, steered) for m, f in measured]
        cells = [r.method, "-" if r.alpha is None else f"{r.alpha:g}"] + ([r.settings or "-"] if with_settings else [])
        table.add_row(*cells, f"{r.tox_dist:.4f}", delta, _pct(r.tox_delta_wo_top_pct) if steered else "-",
                      f"{r.ppl:.2f}", collapsed, *shown, utility,
                      f"{r.toxicity:.3f}", str(r.n))
    results.print(table)


def print_ppa_table(rows: Sequence[PPARow]) -> None:
    """PPA per predictor with its interval and the paired difference from the population predictor."""
    if not rows:
        return
    table = Table(title="personalised preference accuracy (held-out pairs)")
    for column in ("predictor", "pairs", "accuracy [95% CI]", "Δ vs population [95% CI]"):
        table.add_column(column, justify="left" if column == "predictor" else "right")
    for r in rows:
        accuracy = f"{100 * r.accuracy:.1f}%" + (
            f" [{100 * r.accuracy_ci[0]:.1f}, {100 * r.accuracy_ci[1]:.1f}]" if r.accuracy_ci else "")
        diff = "-"
        if r.diff_vs_population is not None and r.diff_vs_population_ci is not None:
            low, high = r.diff_vs_population_ci
            diff = f"{100 * r.diff_vs_population:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
        table.add_row(r.predictor, str(r.pairs), accuracy, diff)
    results.print(table)


def _plain(value: object) -> object:
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def print_results_json(main: Sequence[MainRow], ppa: Sequence[PPARow], report: Path) -> None:
    """The main table and PPA as one JSON object on stdout (`--json`), for a program to read; the report's
    path beside them."""
    rows = {"report": str(report), "main": [{k: _plain(v) for k, v in r.columns().items()} for r in main],
            "ppa": [{k: _plain(v) for k, v in r.columns().items()} for r in ppa]}
    print(json.dumps(rows, indent=1))
