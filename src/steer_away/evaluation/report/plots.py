"""The report's PNG plots, drawn from the analysis' typed rows.

Figures are built without pyplot, so drawing a report never chooses a GUI backend or keeps figures alive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from steer_away.evaluation.report.analysis import cell_order
from steer_away.evaluation.report.rows import CHANGE_BINS, CategoryRow, MainRow
from steer_away.steering.registry import BASELINE


def plot_categories(rows: Sequence[CategoryRow], out: Path) -> list[Path]:
    """The per-category % changes as a heatmap coloured by the study's bins."""
    columns = list(rows[0].change_pct) if rows else []
    if not columns:
        return []
    values = np.array([[r.change_pct[c] for c in columns] for r in rows], dtype=float)
    colours = ListedColormap(["#2e7d32", "#c0ca33", "#eeeeee", "#fb8c00", "#c62828"])
    norm = BoundaryNorm([-1e9, -CHANGE_BINS[1], -CHANGE_BINS[0], CHANGE_BINS[0], CHANGE_BINS[1], 1e9], colours.N)
    fig = Figure(figsize=(1.5 * len(columns) + 2.5, 0.6 * len(rows) + 1.6), dpi=120)
    ax = fig.subplots()
    ax.imshow(np.nan_to_num(values, nan=0.0), cmap=colours, norm=norm, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, "-" if math.isnan(values[i, j]) else f"{values[i, j]:+.1f}%", ha="center", va="center",
                    fontsize=8)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r.category for r in rows], fontsize=8)
    ax.set_title(f"% change in {rows[0].metric} vs unsteered, by prompt category\n"
                 "green: closer to the users (≥15 % dark), grey: |Δ| ≤ 5 %, orange/red: further", fontsize=9)
    fig.tight_layout()
    path = out / "categories.png"
    fig.savefig(path)
    return [path]


def plot_sweep(main: Sequence[MainRow], out: Path) -> list[Path]:
    """One panel per method: ΔMAE% (top) and answer perplexity (bottom) against α.

    Methods live on different α scales (Bradley–Terry vectors need ~10× the α of the population
    vector), so each gets its own x axis; the y axes are shared so the panels compare.
    """
    series: dict[str, list[MainRow]] = {}
    base = next((r for r in main if r.method == BASELINE), None)
    for r in main:
        if r.method != BASELINE and r.alpha is not None:
            series.setdefault(r.method + (f" {r.settings}" if r.settings else ""), []).append(r)
    if not series:
        return []
    names = sorted(series, key=lambda n: cell_order(n.split(" ")[0], "", None))
    fig = Figure(figsize=(2.6 * len(names) + 1, 5.4), dpi=120)
    axes = fig.subplots(2, len(names), sharey="row", squeeze=False)
    for col, name in enumerate(names):
        rows = sorted(series[name], key=lambda r: r.alpha or 0.0)
        alphas = [r.alpha for r in rows]
        top, bottom = axes[0][col], axes[1][col]
        top.plot(alphas, [r.headline_delta_pct for r in rows], marker="o", color="tab:orange")
        top.axhline(0, color="grey", linestyle="--", linewidth=1)
        top.set_title(name, fontsize=9)
        bottom.plot(alphas, [r.ppl for r in rows], marker="s", color="tab:brown")
        if base is not None and not math.isnan(base.ppl):
            bottom.axhline(base.ppl, color="grey", linestyle="--", linewidth=1)
        bottom.set_xlabel("α")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.set_xticks(alphas)
    axes[0][0].set_ylabel("Δ TOXICITY distance vs\nunsteered (%) ↓ closer to users"
                          if math.isfinite(main[0].tox_dist) else "Δ MAE vs unsteered (%)\n↓ closer to users")
    axes[1][0].set_ylabel("answer perplexity\n(median, ↓)")
    fig.suptitle("Steering strength against toxicity distance and fluency (dashed: unsteered)", fontsize=10)
    fig.tight_layout()
    path = out / "sweep.png"
    fig.savefig(path)
    return [path]
