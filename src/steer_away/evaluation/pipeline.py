"""A sweep end to end (`steer-away sweep` and `demo`): evaluate every cell, measure personalised
preference accuracy, write the report. Returns what it did; the command line prints it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steer_away.evaluation.ppa import compute_ppa
from steer_away.evaluation.report import write_report
from steer_away.evaluation.report.rows import ReportTables
from steer_away.evaluation.summary import PPAResult
from steer_away.evaluation.sweep import EvalContext, SweepConfig, SweepResult, run_sweep


@dataclass
class SweepReport:
    """A finished sweep: its cells, PPA (None when skipped), the report folder and its tables."""

    sweep: SweepResult
    ppa: PPAResult | None
    report_dir: Path
    tables: ReportTables


def sweep_and_report(config: SweepConfig, *, title: str, preface: str = "", ray_address: str | None = None,
                     with_ppa: bool = True, report_dir: str | Path | None = None) -> SweepReport:
    """Run the sweep (resuming what is done), then PPA unless `with_ppa` is off, then the report in
    `report_dir` (default: <run folder>/report), its notes opening with `preface`."""
    result = run_sweep(config, ray_address=ray_address)
    ppa: PPAResult | None = None
    if with_ppa:
        ppa = compute_ppa(EvalContext(config), max_pairs=config.ppa_pairs)
    out = Path(report_dir or config.run_dir / "report")
    notes = preface + "\n" + (f"Model `{config.model or 'embedded SmolLM2-135M-Instruct'}`, scorer `{config.scorer}`, "
                              f"data `{config.prism or 'standin'}`. Sweep took {result.seconds:.0f}s "
                              f"({len(result.computed)} cells computed, {len(result.skipped)} reused).\n")
    tables = write_report(config.run_dir / "results.sqlite", out, fingerprint=result.fingerprint, ppa=ppa,
                          title=title, notes=notes)
    return SweepReport(sweep=result, ppa=ppa, report_dir=out, tables=tables)
