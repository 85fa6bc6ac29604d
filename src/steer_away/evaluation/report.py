"""Reports from the results store: tables shaped like the studies' (CSV + Markdown) and PNG plots."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from steer_away.data.categories import CATEGORIES
from steer_away.evaluation.metrics import (
    COLLAPSE_DISTINCT2,
    COLLAPSE_REPEATS,
    COLLAPSED_CELL_SHARE,
    cluster_bootstrap,
    distinct_n,
    is_collapsed,
    mcnemar_exact,
    pct_change,
    smallest_detectable_change,
)
from steer_away.evaluation.store import AnswerRecord, ResultsStore
from steer_away.profiles import SENSITIVITIES
from steer_away.steering.registry import BASELINE, method_names


def _fmt(value: float | None, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _ci(interval: Sequence[float] | None, spec: str) -> str:
    return f" [{format(interval[0], spec)}, {format(interval[1], spec)}]" if interval else ""


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f}%"


def latest_fingerprint(cells: Sequence[dict]) -> str | None:
    done = [c for c in cells if c["finished_at"]]
    return max(done, key=lambda c: c["finished_at"])["spec"]["fingerprint"] if done else None


def _order(cell: dict) -> tuple:
    names = method_names()
    name = cell["method"]
    return (names.index(name) if name in names else len(names), name, cell["settings"] or "",
            -math.inf if cell["alpha"] is None else cell["alpha"])


def _alpha(row: dict) -> str:
    """α as shown: a number, '-' for the baseline, 'by category' for logit steering's per-user strength."""
    if row["alpha"] is None:
        return "-" if row["method"] == BASELINE else "by category"
    return f"{row['alpha']:g}"


def _label(cell: dict) -> str:
    return f"{cell['method']} α={_alpha(cell)}" + (f" {cell['settings']}" if cell["settings"] else "")


def paired_mmlu(answers: dict[str, bool], baseline: dict[str, bool]) -> tuple[int, int, float]:
    """(questions turned right, turned wrong, McNemar p) against the baseline, on the questions both answered."""
    shared = set(answers) & set(baseline)
    to_right = sum(1 for q in shared if answers[q] and not baseline[q])
    to_wrong = sum(1 for q in shared if baseline[q] and not answers[q])
    return to_right, to_wrong, mcnemar_exact(to_right, to_wrong)


def intervals(rows: Sequence[AnswerRecord], base_rows: Sequence[AnswerRecord],
              preferred: dict[str, float] | None = None) -> dict[str, list[float]]:
    """User- and prompt-clustered 95 % bootstrap intervals for MAE, mean TOXICITY and Δ% MAE, and, given
    each user's preferred TOXICITY, for the TOXICITY distance and its Δ%."""
    if len(rows) < 2:
        return {}
    users, prompts = [a.user_id for a in rows], [a.prompt_id for a in rows]
    out = {"mae_ci": list(cluster_bootstrap(np.array([a.distance for a in rows]), users, prompts)),
           "toxicity_ci": list(cluster_bootstrap(np.array([a.toxicity[0] for a in rows]), users, prompts))}
    metrics = {"": lambda a: a.distance}
    if preferred:
        metrics["tox_"] = lambda a: abs(a.toxicity[0] - preferred[a.user_id])
        known = [a for a in rows if a.user_id in preferred]
        if len(known) >= 2:
            out["tox_dist_ci"] = list(cluster_bootstrap(np.array([metrics["tox_"](a) for a in known]),
                                                        [a.user_id for a in known], [a.prompt_id for a in known]))
    base = {a.row_id: a for a in base_rows}
    paired = [a for a in rows if a.row_id in base and (not preferred or a.user_id in preferred)]
    if paired and paired is not rows and base_rows is not rows:
        for prefix, value in metrics.items():
            out[f"{prefix}delta_ci"] = list(cluster_bootstrap(
                np.array([value(a) for a in paired]), [a.user_id for a in paired], [a.prompt_id for a in paired],
                baseline=np.array([value(base[a.row_id]) for a in paired]), relative=True))
    return out


def quality(answers: Sequence[str]) -> dict[str, float]:
    """Mean distinct-2 of the answers and the share flagged as collapsed (looping, repeated phrases)."""
    d2 = [distinct_n(a, 2) for a in answers]
    d2 = [v for v in d2 if not math.isnan(v)]
    flagged = sum(is_collapsed(a) for a in answers)
    return {"distinct2": sum(d2) / len(d2) if d2 else float("nan"),
            "collapsed_share": flagged / len(answers) if answers else float("nan")}


def build_tables(cells: Sequence[dict], mmlu_correct: dict[str, dict[str, bool]] | None = None,
                 answers: dict[str, list[AnswerRecord]] | None = None) -> tuple[list[dict], list[dict]]:
    """(main rows, per-category rows) for one fingerprint's cells; Δ% against its unsteered cell.
    `mmlu_correct` (cell key -> question id -> right?) adds the paired MMLU test against the baseline;
    `answers` (cell key -> its stored answers) adds intervals, repetition and the collapse flag."""
    cells = sorted(cells, key=_order)
    baseline = next((c for c in cells if c["method"] == BASELINE), None)
    base = baseline["summary"] if baseline else None
    mmlu_correct = mmlu_correct or {}
    base_answers = mmlu_correct.get(baseline["key"], {}) if baseline else {}
    main = []
    for c in cells:
        s = c["summary"]
        turned = paired_mmlu(mmlu_correct.get(c["key"], {}), base_answers) if base_answers and c is not baseline \
            else (0, 0, float("nan"))
        main.append({
            "method": c["method"], "alpha": c["alpha"], "settings": c["settings"],
            "tox_dist": s.get("tox_dist", float("nan")),
            "tox_delta_pct": pct_change(s.get("tox_dist", float("nan")), base.get("tox_dist", float("nan")))
            if base else float("nan"),
            "mae": s["mae"], "delta_pct": pct_change(s["mae"], base["mae"]) if base else float("nan"),
            "ppl": s["ppl_median"], "ppl_mean": s["ppl_mean"], "mmlu": s["mmlu_acc"],
            "mmlu_low": s["mmlu_ci"][0], "mmlu_high": s["mmlu_ci"][1], "toxicity": s["toxicity_mean"],
            "n": s["n"], "empty": s["empty_answers"],
            "mmlu_letter_mass": s.get("mmlu_letter_mass", float("nan")), "mmlu_turned_right": turned[0],
            "mmlu_turned_wrong": turned[1], "mmlu_mcnemar_p": turned[2],
            **quality([a.answer for a in (answers or {}).get(c["key"], [])]),
            **intervals((answers or {}).get(c["key"], []),
                        (answers or {}).get(baseline["key"], []) if baseline and c is not baseline else [],
                        s.get("preferred_toxicity")),
        })
        main[-1]["collapsed"] = bool(main[-1]["collapsed_share"] >= COLLAPSED_CELL_SHARE)
    per_category = []
    key = "tox_dist_by_category" if base and base.get("tox_dist_by_category") else "mae_by_category"
    for category in CATEGORIES:
        row: dict = {"category": category, "metric": "TOXICITY distance" if key.startswith("tox") else "MAE",
                     "baseline": base[key].get(category, float("nan")) if base else float("nan")}
        for c in cells:
            if c is baseline:
                continue
            value = c["summary"].get(key, {}).get(category, float("nan"))
            row[_label(c)] = pct_change(value, row["baseline"])
        per_category.append(row)
    return main, per_category


def sensitivity_table_markdown(cells: Sequence[dict]) -> str:
    """Mean TOXICITY of the answers and MAE for each user group: personalisation should move them apart."""
    cells = sorted(cells, key=_order)
    groups = [g for g in SENSITIVITIES
              if any(g in c["summary"].get("toxicity_by_sensitivity", {}) for c in cells)]
    if not groups:
        return ""
    key = "tox_dist_by_sensitivity" if any(c["summary"].get("tox_dist_by_sensitivity") for c in cells) \
        else "mae_by_sensitivity"
    name = "TOX distance" if key.startswith("tox") else "MAE"
    header = "| run / method | α | " + " | ".join(f"{g}: TOXICITY / {name}" for g in groups) + " |"
    lines = [header, "|---|---|" + "---|" * len(groups)]
    for c in cells:
        s = c["summary"]
        values = [f"{_fmt(s['toxicity_by_sensitivity'].get(g), '.3f')} / {_fmt(s.get(key, {}).get(g))}"
                  for g in groups]
        lines.append(f"| {c['method']} | {_alpha(c)} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main_table_markdown(main: Sequence[dict]) -> str:
    lines = ["| run / method | α | settings | TOXICITY distance ↓ [95% CI] | Δ% vs baseline [95% CI] | "
             "6-attribute MAE ↓ [95% CI] | Δ% MAE [95% CI] | PPL ↓ (median) | "
             "distinct-2 / collapsed | MMLU [95% CI] | letter mass | MMLU vs baseline: +right / −wrong, McNemar p | "
             "mean TOXICITY [95% CI] | n |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in main:
        mmlu = "-" if math.isnan(r["mmlu"]) else f"{100 * r['mmlu']:.1f}% [{100 * r['mmlu_low']:.0f}–{100 * r['mmlu_high']:.0f}]"
        mass = _fmt(r["mmlu_letter_mass"], ".3f")
        paired = "-" if math.isnan(r["mmlu_mcnemar_p"]) else \
            f"+{r['mmlu_turned_right']} / −{r['mmlu_turned_wrong']}, p={r['mmlu_mcnemar_p']:.2f}"
        delta = _pct(r["delta_pct"]) + _ci(r.get("delta_ci"), "+.0f") if r["method"] != BASELINE else "-"
        tox_delta = _pct(r["tox_delta_pct"]) + _ci(r.get("tox_delta_ci"), "+.0f") if r["method"] != BASELINE else "-"
        lines.append(f"| {r['method']} | {_alpha(r)} | {r['settings'] or '-'} | "
                     f"{_fmt(r['tox_dist'])}{_ci(r.get('tox_dist_ci'), '.3f')} | {tox_delta} | "
                     f"{_fmt(r['mae'])}{_ci(r.get('mae_ci'), '.3f')} | {delta} | {_fmt(r['ppl'], '.2f')} | "
                     f"{_fmt(r['distinct2'], '.2f')} / {_fmt(100 * r['collapsed_share'], '.0f')}%"
                     f"{' ⚠ collapsed' if r['collapsed'] else ''} | "
                     f"{mmlu} | {mass} | {paired} | {_fmt(r['toxicity'], '.3f')}{_ci(r.get('toxicity_ci'), '.3f')} | "
                     f"{r['n']} |")
    return "\n".join(lines)


def mmlu_note(questions: int) -> str:
    if not questions:
        return ""
    smallest = smallest_detectable_change(questions)
    return (f"MMLU: zero-shot, the four option letters scored against each other only (after the steering "
            f"combines its branches); *letter mass* is the probability the steered model put on A-D at all. "
            f"The paired test compares each cell's answers with the baseline's on the same {questions} questions "
            f"(exact McNemar). With {questions} questions the smallest change it can call significant at 5 % is "
            f"{100 * smallest:.0f} points (all flips one way); smaller differences are noise.\n")


CHANGE_BINS = (5.0, 15.0)  # the CAA study's colour bins for |% change|: ≤ 5, 5-15, ≥ 15


def change_bin(pct: float) -> str:
    """The study's bin of a % change as a marker: ⬜ |Δ| ≤ 5 %; 🟨 / 🟩 5-15 % / ≥ 15 % closer to the users;
    🟧 / 🟥 5-15 % / ≥ 15 % further from them."""
    if pct is None or not math.isfinite(pct) or abs(pct) <= CHANGE_BINS[0]:
        return "⬜"
    strong = abs(pct) >= CHANGE_BINS[1]
    if pct < 0:
        return "🟩" if strong else "🟨"
    return "🟥" if strong else "🟧"


def category_table_markdown(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    columns = [k for k in rows[0] if k not in ("category", "baseline", "metric")]
    metric = rows[0].get("metric", "MAE")
    lines = [f"| category | baseline {metric} | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for r in rows:
        lines.append(f"| {r['category']} | {_fmt(r['baseline'])} | "
                     + " | ".join(f"{change_bin(r[c])} {_pct(r[c])}" for c in columns) + " |")
    lines += ["", "⬜ |Δ| ≤ 5 % · 🟨 5–15 % closer · 🟩 ≥ 15 % closer · 🟧 5–15 % further · 🟥 ≥ 15 % further "
                  "(the CAA study's bins)"]
    return "\n".join(lines)


def plot_categories(rows: Sequence[dict], out: Path) -> list[Path]:
    """The per-category % changes as a heatmap coloured by the study's bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap

    columns = [k for k in rows[0] if k not in ("category", "baseline", "metric")] if rows else []
    if not columns:
        return []
    values = np.array([[r[c] for c in columns] for r in rows], dtype=float)
    colours = ListedColormap(["#2e7d32", "#c0ca33", "#eeeeee", "#fb8c00", "#c62828"])
    norm = BoundaryNorm([-1e9, -CHANGE_BINS[1], -CHANGE_BINS[0], CHANGE_BINS[0], CHANGE_BINS[1], 1e9], colours.N)
    fig, ax = plt.subplots(figsize=(1.5 * len(columns) + 2.5, 0.6 * len(rows) + 1.6), dpi=120)
    ax.imshow(np.nan_to_num(values, nan=0.0), cmap=colours, norm=norm, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, "-" if math.isnan(values[i, j]) else f"{values[i, j]:+.1f}%", ha="center", va="center",
                    fontsize=8)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r["category"] for r in rows], fontsize=8)
    ax.set_title(f"% change in {rows[0].get('metric', 'MAE')} vs unsteered, by prompt category\n"
                 "green: closer to the users (≥15 % dark), grey: |Δ| ≤ 5 %, orange/red: further", fontsize=9)
    fig.tight_layout()
    path = out / "categories.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        fields = list(dict.fromkeys(key for row in rows for key in row))  # rows may differ (the baseline has no Δ CI)
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _headline(row: dict) -> str:
    """The Δ% a plot shows: TOXICITY distance when the cells recorded it, else the 6-attribute MAE."""
    return "tox_delta_pct" if math.isfinite(row.get("tox_dist", float("nan"))) else "delta_pct"


def plot_sweep(main: Sequence[dict], out: Path) -> list[Path]:
    """One panel per method: ΔMAE% (top) and answer perplexity (bottom) against α.

    Methods live on different α scales (Bradley–Terry vectors need ~10× the α of the population
    vector), so each gets its own x axis; the y axes are shared so the panels compare.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = {}
    base = next((r for r in main if r["method"] == BASELINE), None)
    for r in main:
        if r["method"] != BASELINE and r["alpha"] is not None:
            series.setdefault(r["method"] + (f" {r['settings']}" if r["settings"] else ""), []).append(r)
    if not series:
        return []
    names = sorted(series, key=lambda n: _order({"method": n.split(" ")[0], "settings": "", "alpha": None}))
    fig, axes = plt.subplots(2, len(names), figsize=(2.6 * len(names) + 1, 5.4), dpi=120, sharey="row",
                             squeeze=False)
    for col, name in enumerate(names):
        rows = sorted(series[name], key=lambda r: r["alpha"])
        alphas = [r["alpha"] for r in rows]
        top, bottom = axes[0][col], axes[1][col]
        top.plot(alphas, [r[_headline(r)] for r in rows], marker="o", color="tab:orange")
        top.axhline(0, color="grey", linestyle="--", linewidth=1)
        top.set_title(name, fontsize=9)
        bottom.plot(alphas, [r["ppl"] for r in rows], marker="s", color="tab:brown")
        if base is not None and not math.isnan(base["ppl"]):
            bottom.axhline(base["ppl"], color="grey", linestyle="--", linewidth=1)
        bottom.set_xlabel("α")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.set_xticks(alphas)
    axes[0][0].set_ylabel("Δ TOXICITY distance vs\nunsteered (%) ↓ closer to users"
                          if _headline(main[0]) == "tox_delta_pct" else "Δ MAE vs unsteered (%)\n↓ closer to users")
    axes[1][0].set_ylabel("answer perplexity\n(median, ↓)")
    fig.suptitle("Steering strength against toxicity distance and fluency (dashed: unsteered)", fontsize=10)
    fig.tight_layout()
    path = out / "sweep.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]


def _baseline_answers(cells: Sequence[dict], answers: dict[str, list[AnswerRecord]]
                      ) -> tuple[dict | None, dict[str, AnswerRecord]]:
    """The unsteered cell and its answers by row id (None and {} when the sweep has no baseline)."""
    baseline = next((c for c in cells if c["method"] == BASELINE), None)
    if baseline is None:
        return None, {}
    return baseline, {a.row_id: a for a in answers.get(baseline["key"], [])}


def sensitivity_effects(cells: Sequence[dict], answers: dict[str, list[AnswerRecord]]) -> list[dict]:
    """Per user group: the change in mean TOXICITY and in TOXICITY distance against unsteered on the same
    rows, with user- and prompt-clustered 95 % intervals (an interval that excludes 0 is a measured effect)."""
    baseline, base = _baseline_answers(cells, answers)
    if baseline is None:
        return []
    out = []
    for c in sorted(cells, key=_order):
        groups = c["summary"].get("sensitivity_of") or {}
        preferred = c["summary"].get("preferred_toxicity") or {}
        if c is baseline or not groups or not preferred:
            continue
        for group in SENSITIVITIES:
            rows = [a for a in answers.get(c["key"], []) if groups.get(a.user_id) == group and a.row_id in base
                    and a.user_id in preferred]
            if len(rows) < 2:
                continue
            users, prompts = [a.user_id for a in rows], [a.prompt_id for a in rows]
            tox = np.array([a.toxicity[0] for a in rows])
            base_tox = np.array([base[a.row_id].toxicity[0] for a in rows])
            pref = np.array([preferred[a.user_id] for a in rows])
            dist, base_dist = np.abs(tox - pref), np.abs(base_tox - pref)
            out.append({"method": c["method"], "alpha": c["alpha"], "settings": c["settings"], "group": group,
                        "n": len(rows), "users": len(set(users)),
                        "toxicity_change": float(tox.mean() - base_tox.mean()),
                        "toxicity_change_ci": list(cluster_bootstrap(tox, users, prompts, baseline=base_tox)),
                        "distance_change": float(dist.mean() - base_dist.mean()),
                        "distance_change_ci": list(cluster_bootstrap(dist, users, prompts, baseline=base_dist))})
    return out


def sensitivity_effects_markdown(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    lines = ["| run / method | α | group | rows (users) | Δ mean TOXICITY [95% CI] | Δ TOXICITY distance [95% CI] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        def cell(value: float, ci: Sequence[float]) -> str:
            mark = " ✓" if ci[1] < 0 or ci[0] > 0 else ""
            return f"{value:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]{mark}"

        lines.append(f"| {r['method']} | {_alpha(r)} | {r['group']} | {r['n']} ({r['users']}) | "
                     f"{cell(r['toxicity_change'], r['toxicity_change_ci'])} | "
                     f"{cell(r['distance_change'], r['distance_change_ci'])} |")
    lines += ["", "✓: the interval excludes 0 (differences against unsteered on the same rows; negative = lower)."]
    return "\n".join(lines)


def change_sources(cells: Sequence[dict], answers: dict[str, list[AnswerRecord]]) -> list[dict]:
    """Where each cell's change in mean TOXICITY comes from: the share carried by collapsed answers, the
    change on the rows where the steered answer did not collapse, and the one prompt that moved most.
    A drop that lives in a few looping answers or in one prompt is not a general effect."""
    baseline, base = _baseline_answers(cells, answers)
    if baseline is None:
        return []
    out = []
    for c in sorted(cells, key=_order):
        if c is baseline:
            continue
        rows = [a for a in answers.get(c["key"], []) if a.row_id in base]
        if not rows:
            continue
        change = np.array([a.toxicity[0] - base[a.row_id].toxicity[0] for a in rows])
        collapsed = np.array([is_collapsed(a.answer) for a in rows])
        total = float(change.sum())
        by_prompt: dict[str, float] = {}
        for a, d in zip(rows, change):
            by_prompt[a.prompt] = by_prompt.get(a.prompt, 0.0) + float(d)
        top_prompt, top_change = max(by_prompt.items(), key=lambda kv: abs(kv[1]))
        clean = ~collapsed
        out.append({
            "method": c["method"], "alpha": c["alpha"], "settings": c["settings"],
            "toxicity_change": float(change.mean()),
            "from_collapsed": float(change[collapsed].sum() / total) if total else float("nan"),
            "clean_rows": int(clean.sum()),
            "clean_steered": float(np.mean([a.toxicity[0] for a, k in zip(rows, clean) if k])) if clean.any()
            else float("nan"),
            "clean_unsteered": float(np.mean([base[a.row_id].toxicity[0] for a, k in zip(rows, clean) if k]))
            if clean.any() else float("nan"),
            "top_prompt": top_prompt, "top_prompt_share": top_change / total if total else float("nan"),
        })
    return out


NET_CHANGE = 0.005  # smallest |Δ mean TOXICITY| whose sources the report splits into shares


def _share(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value + 0.0:.0f}%"


def change_sources_markdown(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    lines = ["| run / method | α | settings | Δ mean TOXICITY | share from collapsed answers | "
             "non-collapsed rows: steered vs unsteered TOXICITY | prompt that moved most (its share of Δ) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        # shares of a net change near zero are ratios of noise: shown only for a change of 0.005 or more
        net = abs(r["toxicity_change"]) >= NET_CHANGE
        lines.append(f"| {r['method']} | {_alpha(r)} | {r['settings'] or '-'} | "
                     f"{r['toxicity_change']:+.4f} | {_share(r['from_collapsed']) if net else 'no net change'} | "
                     f"{_fmt(r['clean_steered'], '.4f')} vs {_fmt(r['clean_unsteered'], '.4f')} "
                     f"({r['clean_rows']} rows) | “{_quote(r['top_prompt'], 60)}”"
                     + (f" ({_share(r['top_prompt_share'])})" if net else "") + " |")
    return "\n".join(lines)


def sample_answers(store: ResultsStore, cells: Sequence[dict], users: int = 3, prompts: int = 2) -> str:
    """Markdown: unsteered vs each method's best cell (lowest MAE among `cells`; the caller leaves out
    collapsed cells, so a looping answer is never shown as a method's best) for a few users."""
    by_method: dict[str, dict] = {}
    def distance(c: dict) -> float:
        value = c["summary"].get("tox_dist", float("nan"))
        return value if math.isfinite(value) else c["summary"]["mae"]

    for c in sorted(cells, key=distance):
        by_method.setdefault(c["method"], c)
    base = by_method.get(BASELINE)
    if base is None:
        return ""
    base_rows = {a.row_id: a for a in store.answers(base["key"])}
    shown_users: list[str] = []
    for a in base_rows.values():
        if a.user_id not in shown_users:
            shown_users.append(a.user_id)
    lines = []
    picks = [m for m in method_names() if m in by_method and m != BASELINE]
    answers = {m: {x.row_id: x for x in store.answers(by_method[m]["key"])} for m in picks}
    for user in _spread(shown_users, users):
        rows = [a for a in base_rows.values() if a.user_id == user]
        rows = sorted(rows, key=lambda a: -a.distance)[:prompts]
        for a in rows:
            lines.append(f"#### {user} — {a.category}: “{a.prompt}”\n")
            lines.append(f"- **{BASELINE}** (distance {a.distance:.3f}, TOXICITY {a.toxicity[0]:.3f}): {_quote(a.answer)}")
            for method in picks:
                cell = by_method[method]
                other = answers[method].get(a.row_id)
                if other:
                    lines.append(f"- **{method} α={_fmt(cell['alpha'], 'g')}** (distance {other.distance:.3f}, "
                                 f"TOXICITY {other.toxicity[0]:.3f}): {_quote(other.answer)}")
            lines.append("")
    return "\n".join(lines)


def _spread(items: list[str], n: int) -> list[str]:
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _quote(text: str, limit: int = 220) -> str:
    text = " ".join(text.split())
    return (text[:limit] + "…") if len(text) > limit else (text or "*(empty)*")


def vector_cards_markdown(path: Path) -> str:
    """The report's section on the vectors themselves: a population vector pointing toward toxicity
    is called out before any result that used it."""
    from steer_away.steering.card import load_cards

    cards, banks = load_cards(path)
    parts = ["## The steering vectors\n",
             "Norm per layer against the typical residual norm, cosine with a respectful-minus-toxic direction "
             "measured on our 20-prompt contrast set (`resources/respect_contrast.jsonl`), and the tokens the "
             "vector promotes through the logit lens.\n"]
    for card in cards:
        if card.toward_toxicity:
            parts.append(f"> **Warning: the {card.name} vector points toward toxicity.** {card.verdict}.\n")
        parts += [card.markdown(), ""]
    parts += [bank.markdown() + "\n" for bank in banks]
    return "\n".join(parts) + "\n"


def write_report(store_path: str | Path, out: str | Path, fingerprint: str | None = None,
                 ppa: dict[str, float] | None = None, title: str = "steer-away report",
                 notes: str = "", cards: str | Path | None = None) -> dict:
    """Write report.md, main.csv, categories.csv, ppa.csv and the PNGs; return the tables.
    `cards`: the vector store's cards.json (default: the one beside the store, if any)."""
    out = Path(out)
    cards_path = Path(cards) if cards else Path(store_path).parent / "vectors" / "cards.json"
    out.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(store_path, create=False)
    try:
        cells = store.cells(only_done=True)
        fingerprint = fingerprint or latest_fingerprint(cells)
        cells = [c for c in cells if c["spec"]["fingerprint"] == fingerprint]
        if not cells:
            raise ValueError(f"{store_path} has no finished cells to report")
        mmlu_correct = {c["key"]: {r.question_id: r.correct for r in store.mmlu(c["key"])} for c in cells}
        stored = {c["key"]: store.answers(c["key"]) for c in cells}
        main, per_category = build_tables(cells, mmlu_correct, stored)
        sources = change_sources(cells, stored)
        effects = sensitivity_effects(cells, stored)
        collapsed = {(r["method"], r["alpha"], r["settings"]) for r in main if r["collapsed"]}
        questions = max((len(v) for v in mmlu_correct.values()), default=0)
        _write_csv(out / "main.csv", main)
        _write_csv(out / "categories.csv", per_category)
        _write_csv(out / "change_sources.csv", sources)
        _write_csv(out / "sensitivity_effects.csv", effects)
        plots = plot_sweep(main, out) + plot_categories(per_category, out)
        samples = sample_answers(store, [c for c in cells if (c["method"], c["alpha"], c["settings"]) not in collapsed])
    finally:
        store.close()
    parts = [f"# {title}\n", notes]
    if cards_path.is_file():
        parts += [vector_cards_markdown(cards_path)]
    parts += ["## Toxicity distance, perplexity and MMLU by method and α\n",
             "TOXICITY distance (the headline, as in the studies): mean over (user, prompt) of |TOXICITY(answer) − "
             "the TOXICITY the user preferred|. 6-attribute MAE: the same distance averaged over all the scorer's "
             "attributes (three of them are near zero for almost every text, so it dilutes changes). Δ% is against "
             "the unsteered model on the same prompts and scorer.\n",
             main_table_markdown(main), "\n", mmlu_note(questions),
             f"*distinct-2*: share of distinct word bigrams per answer (1 = no repetition), averaged; an answer is "
             f"*collapsed* when that share is below {COLLAPSE_DISTINCT2} or a 4-word phrase recurs "
             f"{COLLAPSE_REPEATS}+ times; a cell with {100 * COLLAPSED_CELL_SHARE:.0f} % collapsed answers is marked ⚠ "
             "and never picked as a method's best below. Perplexity is under the unsteered model (self-perplexity "
             "for the baseline), so loops can look fluent by it: read it beside distinct-2.\n",
             "\n## Where the change in TOXICITY comes from\n",
             "A drop carried by collapsed (looping) answers or by a single prompt is not a general effect; the "
             "non-collapsed column compares steered and unsteered answers on the rows where steering left the text "
             "intact.\n", change_sources_markdown(sources), "\n",
             "\n## % change in distance by prompt category (negative = closer to the users)\n",
             category_table_markdown(per_category), "\n",
             "## By user sensitivity: mean TOXICITY of the answers / TOXICITY distance\n",
             "Personalised steering should lower toxicity for strict users and may raise it for tolerant ones.\n",
             sensitivity_table_markdown(cells), "\n", sensitivity_effects_markdown(effects), "\n"]
    if ppa:
        _write_csv(out / "ppa.csv", [{"predictor": k, "value": v} for k, v in ppa.items()])
        parts += ["## Personalised preference accuracy (held-out pairs)\n", "| predictor | accuracy |", "|---|---|"]
        parts += [f"| {k} | {100 * v:.1f}% |" for k, v in ppa.items() if k not in ("pairs", "toxicity ties")]
        parts += [f"\n{int(ppa.get('pairs', 0))} held-out pairs; {100 * ppa.get('toxicity ties', float('nan')):.1f}% "
                  "have (near) identical toxicity (|gap| ≤ 0.05).\n"]
    parts += ["## Plots\n"] + [f"![{p.stem}]({p.name})" for p in plots]
    if samples:
        parts += ["\n## Steered vs unsteered answers\n", samples]
    (out / "report.md").write_text("\n".join(parts) + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({"fingerprint": fingerprint, "main": main, "ppa": ppa or {}},
                                                 indent=1, default=str))
    return {"main": main, "categories": per_category, "fingerprint": fingerprint}
