"""Tables the command line prints from a sweep's report."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.table import Table

from steer_away.console import console
from steer_away.evaluation.summary import MainRow
from steer_away.steering.registry import BASELINE


def print_main_table(main: Sequence[MainRow], title: str) -> None:
    """The report's main table, short: one line per cell."""
    table = Table(title=title)
    for column in ("method", "α", "settings", "TOX dist ↓", "Δ% vs base", "MAE ↓", "PPL ↓", "collapsed", "MMLU",
                   "TOXICITY", "n"):
        table.add_column(column, justify="left" if column in ("method", "settings") else "right",
                         no_wrap=column == "method")
    for r in main:
        delta = "-" if r.method == BASELINE or math.isnan(r.tox_delta_pct) else f"{r.tox_delta_pct:+.1f}%"
        mmlu = "-" if math.isnan(r.mmlu) else f"{100 * r.mmlu:.1f}%"
        collapsed = "-" if math.isnan(r.collapsed_share) else \
            f"{100 * r.collapsed_share:.0f}%" + (" ⚠" if r.collapsed else "")
        table.add_row(r.method, "-" if r.alpha is None else f"{r.alpha:g}", r.settings or "-",
                      f"{r.tox_dist:.4f}", delta, f"{r.mae:.4f}", f"{r.ppl:.2f}", collapsed, mmlu,
                      f"{r.toxicity:.3f}", str(r.n))
    console.print(table)
