"""The report as Markdown: the analysis' typed rows rendered as tables, notes and sample answers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from steer_away.evaluation.metrics.base import AnswerMetric
from steer_away.evaluation.metrics.base import fmt as _fmt
from steer_away.evaluation.metrics.base import share as _share
from steer_away.evaluation.metrics.functions import (
    COLLAPSE_DISTINCT2,
    COLLAPSE_REPEATS,
    COLLAPSED_CELL_SHARE,
    smallest_detectable_change,
)
from steer_away.evaluation.metrics.registry import report_metrics
from steer_away.evaluation.report.analysis import Answers, alpha_text, label, named, ordered
from steer_away.evaluation.report.findings import ReportAnalysis
from steer_away.evaluation.report.guards_markdown import guards_markdown, verdict_markdown, violations_markdown
from steer_away.evaluation.report.robustness import MAX_PROMPT_SHARE, MIN_TOXIC_PROMPTS
from steer_away.evaluation.report.rows import (
    CHANGE_BINS,
    CategoryRow,
    ChangeSourceRow,
    HeadToHeadRow,
    MainRow,
    PPARow,
    PromptConcentration,
    SensitivityEffectRow,
)
from steer_away.evaluation.store import StoredCell
from steer_away.evaluation.summary import Interval
from steer_away.profiles import SENSITIVITIES
from steer_away.steering.registry import BASELINE, method_names
from steer_away.steering.vectors.card import load_cards


def _ci(interval: Sequence[float] | None, spec: str) -> str:
    return f" [{format(interval[0], spec)}, {format(interval[1], spec)}]" if interval else ""


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f}%"


def _signed(value: float | None, ci: Interval | None, spec: str) -> str:
    """A difference with its interval, marked * when the interval excludes 0 (in either direction: the
    mark says the difference is measured, not that it is good)."""
    if value is None or ci is None:
        return "-"
    mark = " *" if ci[1] < 0 or ci[0] > 0 else ""
    return f"{format(value, spec)} [{format(ci[0], spec)}, {format(ci[1], spec)}]{mark}"


def sensitivity_table_markdown(cells: Sequence[StoredCell]) -> str:
    """Mean TOXICITY of the answers and MAE for each user group: personalisation should move them apart."""
    cells = ordered(cells)
    groups = [g for g in SENSITIVITIES if any(g in c.done_summary.toxicity_by_sensitivity for c in cells)]
    if not groups:
        return ""
    use_tox = any(c.done_summary.tox_dist_by_sensitivity for c in cells)
    name = "TOX distance" if use_tox else "MAE"
    header = "| run / method | α | " + " | ".join(f"{g}: TOXICITY / {name}" for g in groups) + " |"
    lines = [header, "|---|---|" + "---|" * len(groups)]
    for c in cells:
        s = c.done_summary
        distance = s.tox_dist_by_sensitivity if use_tox else s.mae_by_sensitivity
        values = [f"{_fmt(s.toxicity_by_sensitivity.get(g), '.3f')} / {_fmt(distance.get(g))}" for g in groups]
        lines.append(f"| {named(c.method, c.settings)} | {alpha_text(c.method, c.alpha)} | "
                     + " | ".join(values) + " |")
    return "\n".join(lines)


def main_table_markdown(main: Sequence[MainRow]) -> str:
    metrics = report_metrics()
    head = (["run / method", "α", "settings", "TOXICITY distance ↓ [95% CI]", "Δ% vs baseline [95% CI]",
             "Δ% w/o top prompt [95% CI]", "attribute MAE ↓ [95% CI]", "Δ% MAE [95% CI]", "PPL ↓ (median)",
             "distinct-2 / collapsed"] + [m.header for m in metrics]
            + ["utility [95% CI]", "letter mass / no option", "utility vs baseline: +right / −wrong, McNemar p",
               "mean TOXICITY [95% CI]", "cost ×", "n"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in main:
        utility = "-" if math.isnan(r.utility) else \
            f"{100 * r.utility:.1f}% [{100 * r.utility_low:.0f}–{100 * r.utility_high:.0f}]"
        mass = f"none possible: {r.utility_no_option}" if r.utility_no_option else _fmt(r.utility_letter_mass, ".3f")
        paired = "-" if math.isnan(r.utility_p) else \
            f"+{r.utility_turned_right} / −{r.utility_turned_wrong}, p={r.utility_p:.2f}"
        steered = r.method != BASELINE
        delta = _pct(r.delta_pct) + _ci(r.delta_ci, "+.0f") if steered else "-"
        tox_delta = _pct(r.tox_delta_pct) + _ci(r.tox_delta_ci, "+.0f") + (" †" if r.fragile else "") \
            if steered else "-"
        without = _pct(r.tox_delta_wo_top_pct) + _ci(r.tox_delta_wo_top_ci, "+.0f") if steered else "-"
        lines.append(f"| {r.method} | {alpha_text(r.method, r.alpha)} | {r.settings or '-'} | "
                     f"{_fmt(r.tox_dist)}{_ci(r.tox_dist_ci, '.3f')} | {tox_delta} | {without} | "
                     f"{_fmt(r.mae)}{_ci(r.mae_ci, '.3f')} | {delta} | {_fmt(r.ppl, '.2f')} | "
                     f"{_fmt(r.distinct2, '.2f')} / {_fmt(100 * r.collapsed_share, '.0f')}%"
                     f"{' ⚠ collapsed' if r.collapsed else ''} | "
                     + "".join(f"{_metric_cell(r, m, steered)} | " for m in metrics) +
                     f"{utility} | {mass} | {paired} | {_fmt(r.toxicity, '.3f')}{_ci(r.toxicity_ci, '.3f')} | "
                     f"{_cost(r)} | {r.n} |")
    return "\n".join(lines)


def _metric_cell(row: MainRow, metric: AnswerMetric, steered: bool) -> str:
    figures = row.metric(metric.name)
    return "-" if figures is None else metric.cell(figures, steered)


def _cost(row: MainRow) -> str:
    """Seconds per answer ÷ unsteered's; '‡' where the two were timed in different sweep runs."""
    if math.isnan(row.cost_ratio):
        return "-"
    return f"{row.cost_ratio:.2f}{'' if row.cost_same_run else ' ‡'}"


def fragile_note(main: Sequence[MainRow]) -> str:
    """The footnote to the main table's † marks: which prompt each marked cell's effect rests on."""
    lines = ["*Δ% w/o top prompt*: Δ% of TOXICITY distance with the one prompt left out whose removal moves it "
             "furthest toward zero (or across it), on the rows left (paired with unsteered, interval clustered by "
             "user and prompt). †: leaving that prompt out flips the sign of Δ% or whether its interval excludes 0; "
             "the cell's headline rests on one prompt."]
    lines += [f"- † {label(r.method, r.alpha, r.settings)}: "
              f"“{_quote(r.top_prompt, 90)}” ({_pct(r.tox_delta_pct)} → {_pct(r.tox_delta_wo_top_pct)})"
              for r in main if r.fragile]
    return "\n".join(lines) + "\n"


def utility_note(questions: int, utility_format: str) -> str:
    if not questions:
        return ""
    smallest = smallest_detectable_change(questions)
    if utility_format == "cloze":
        how = ("Utility (cloze, acc_norm): zero-shot multiple choice, each option's full text scored by its "
               "length-normalised log-likelihood under the steered model (lm-evaluation-harness's `acc_norm`); "
               "*letter mass* does not apply; *none possible* counts questions where the method's own decoding "
               "rule gives every option a token it would never emit (ACD's plausibility cut-off: the options' "
               "first tokens often fall below β times the base model's favourite), scored wrong: a limit of "
               "the rule under cloze scoring rather than lost knowledge (the letter format compares the "
               "candidates alone for that reason).")
    else:
        how = (f"Utility ({'letter format' if utility_format == 'letter' else 'cells differ in format'}): "
               "zero-shot, the four option letters scored against each other only (after the steering combines "
               "its branches); *letter mass* is the probability the steered model put on A-D at all.")
    return (f"{how} The paired test compares each cell's answers with the baseline's on the same {questions} "
            f"questions (exact McNemar). With {questions} questions the smallest change it can call significant "
            f"at 5 % is {100 * smallest:.0f} points (all flips one way); smaller differences are noise.\n")


def concentration_markdown(c: PromptConcentration | None) -> str:
    """One line near the top: whether the unsteered TOXICITY is spread enough to carry a general claim."""
    if c is None:
        return "Prompt concentration: no unsteered answers to measure it on.\n"
    return (f"Prompt concentration: {c.prompts} prompts, largest share {_share(c.top_share)} "
            f"(prompt {c.top_prompt_id}: “{_quote(c.top_prompt, 80)}”), {c.toxic_prompts} prompts with unsteered "
            f"TOXICITY > {c.threshold:g} (for a general claim: no prompt over {100 * MAX_PROMPT_SHARE:.0f} % of the "
            f"unsteered TOXICITY mass, at least {MIN_TOXIC_PROMPTS} such prompts).\n")


def head_to_head_markdown(rows: Sequence[HeadToHeadRow], has_population: bool) -> str:
    if not has_population:
        return "No population-steering cell in this sweep: nothing to compare personalised steering with.\n"
    if not rows:
        return "No cell's answers depend on the user (every prompt got one answer text for all users).\n"
    lines = ["Each method whose answers differ between users, against population steering (α shown) on the same "
             "rows, per user group and for all users. Differences are the method minus population steering: a "
             "negative TOXICITY-distance difference means answers closer to each user's preferred TOXICITY than "
             "population steering gives; personalisation earns its keep when strict users come closer *and* "
             "tolerant users do not move further away. *: the user- and prompt-clustered 95 % interval excludes 0, "
             "whichever the direction.",
             "", "| method | α | population α | group | rows (users) | TOXICITY distance: method / population | "
             "Δ distance [95% CI] | mean TOXICITY: method / population | Δ TOXICITY [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {named(r.method, r.settings)} | {alpha_text(r.method, r.alpha)} | "
                     f"{_fmt(r.population_alpha, 'g')} | {r.group} | {r.n} ({r.users}) | "
                     f"{r.tox_dist:.4f} / {r.population_tox_dist:.4f} | {_signed(r.tox_dist_diff, r.tox_dist_diff_ci, '+.4f')} | "
                     f"{r.toxicity:.3f} / {r.population_toxicity:.3f} | "
                     f"{_signed(r.toxicity_diff, r.toxicity_diff_ci, '+.4f')} |")
    return "\n".join(lines) + "\n"


def ppa_markdown(rows: Sequence[PPARow], toxicity_ties: float) -> str:
    if not rows:
        return ""
    lines = ["| predictor | pairs (users) | accuracy [95% CI] | Δ vs population [95% CI] |", "|---|---|---|---|"]
    for r in rows:
        accuracy = f"{100 * r.accuracy:.1f}%" + _ci(None if r.accuracy_ci is None else
                                                   (100 * r.accuracy_ci[0], 100 * r.accuracy_ci[1]), ".1f")
        diff = None if r.diff_vs_population is None else 100 * r.diff_vs_population
        diff_ci = None if r.diff_vs_population_ci is None else \
            (100 * r.diff_vs_population_ci[0], 100 * r.diff_vs_population_ci[1])
        lines.append(f"| {r.predictor} | {r.pairs} ({r.users}) | {accuracy} | {_signed(diff, diff_ci, '+.1f')} |")
    lines += ["", "Intervals resample whole users (their pairs are not independent draws); Δ vs population is the "
              "paired difference in points on the pairs both predictors predict. *: the interval excludes 0. "
              f"{_share(toxicity_ties)} of the pairs have (near) identical toxicity (|gap| ≤ 0.05)."]
    return "\n".join(lines) + "\n"




def change_bin(pct: float | None) -> str:
    """The study's bin of a % change as a marker: ⬜ |Δ| ≤ 5 %; 🟨 / 🟩 5-15 % / ≥ 15 % closer to the users;
    🟧 / 🟥 5-15 % / ≥ 15 % further from them."""
    if pct is None or not math.isfinite(pct) or abs(pct) <= CHANGE_BINS[0]:
        return "⬜"
    strong = abs(pct) >= CHANGE_BINS[1]
    if pct < 0:
        return "🟩" if strong else "🟨"
    return "🟥" if strong else "🟧"


def category_table_markdown(rows: Sequence[CategoryRow]) -> str:
    if not rows:
        return ""
    columns = list(rows[0].change_pct)
    lines = [f"| category | baseline {rows[0].metric} | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for r in rows:
        lines.append(f"| {r.category} | {_fmt(r.baseline)} | "
                     + " | ".join(f"{change_bin(r.change_pct[c])} {_pct(r.change_pct[c])}" for c in columns) + " |")
    lines += ["", "⬜ |Δ| ≤ 5 % · 🟨 5–15 % closer · 🟩 ≥ 15 % closer · 🟧 5–15 % further · 🟥 ≥ 15 % further "
                  "(the CAA study's bins)"]
    return "\n".join(lines)


def sensitivity_effects_markdown(rows: Sequence[SensitivityEffectRow]) -> str:
    if not rows:
        return ""
    lines = ["| run / method | α | group | rows (users) | Δ mean TOXICITY [95% CI] | Δ TOXICITY distance [95% CI] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {named(r.method, r.settings)} | {alpha_text(r.method, r.alpha)} | "
                     f"{r.group} | {r.n} ({r.users}) | {_signed(r.toxicity_change, r.toxicity_change_ci, '+.4f')} | "
                     f"{_signed(r.distance_change, r.distance_change_ci, '+.4f')} |")
    lines += ["", "*: the interval excludes 0 (differences against unsteered on the same rows; negative = lower)."]
    return "\n".join(lines)


NET_CHANGE = 0.005  # smallest |Δ mean TOXICITY| whose sources the report splits into shares


def change_sources_markdown(rows: Sequence[ChangeSourceRow]) -> str:
    if not rows:
        return ""
    lines = ["| run / method | α | settings | Δ mean TOXICITY | its share from answers collapsed / refused / "
             "off-request / intact | intact rows: steered vs unsteered TOXICITY | prompt that moved most (its share of Δ) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        # shares of a net change near zero are ratios of noise: shown only for a change of 0.005 or more
        net = abs(r.toxicity_change) >= NET_CHANGE
        shares = " / ".join(_share(v) for v in (r.from_collapsed, r.from_refused, r.from_off_request, r.from_intact))
        lines.append(f"| {r.method} | {alpha_text(r.method, r.alpha)} | {r.settings or '-'} | "
                     f"{r.toxicity_change:+.4f} | {shares if net else 'no net change'} | "
                     f"{_fmt(r.intact_steered, '.4f')} vs {_fmt(r.intact_unsteered, '.4f')} "
                     f"({r.intact_rows} rows) | “{_quote(r.top_prompt, 60)}”"
                     + (f" ({_share(r.top_prompt_share)})" if net else "") + " |")
    return "\n".join(lines)


def sample_answers(cells: Sequence[StoredCell], answers: Answers, users: int = 3, prompts: int = 2) -> str:
    """Unsteered vs each method's best cell (lowest distance among `cells`; the caller leaves out
    collapsed cells, so a looping answer is never shown as a method's best) for a few users."""
    by_method: dict[str, StoredCell] = {}
    for c in sorted(cells, key=lambda c: c.done_summary.headline_distance):
        by_method.setdefault(c.method, c)
    base = by_method.get(BASELINE)
    if base is None:
        return ""
    base_rows = {a.row_id: a for a in answers.get(base.key, [])}
    shown_users: list[str] = []
    for a in base_rows.values():
        if a.user_id not in shown_users:
            shown_users.append(a.user_id)
    lines = []
    picks = [m for m in method_names() if m in by_method and m != BASELINE]
    steered = {m: {x.row_id: x for x in answers.get(by_method[m].key, [])} for m in picks}
    for user in _spread(shown_users, users):
        rows = [a for a in base_rows.values() if a.user_id == user]
        rows = sorted(rows, key=lambda a: -a.attribute_mae)[:prompts]
        for a in rows:
            lines.append(f"#### {user} — {a.category}: “{a.prompt}”\n")
            lines.append(f"- **{BASELINE}** (distance {a.attribute_mae:.3f}, TOXICITY {a.toxicity[0]:.3f}): "
                         f"{_quote(a.answer)}")
            for method in picks:
                cell = by_method[method]
                other = steered[method].get(a.row_id)
                if other:
                    lines.append(f"- **{label(method, cell.alpha, cell.settings)}** (distance {other.attribute_mae:.3f}, "
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


def report_markdown(analysis: ReportAnalysis, *, title: str, notes: str, cards: Path | None,
                    plots: Sequence[Path], samples: str) -> str:
    """The whole report.md: `cards` is the vector store's cards.json (None: no vector section)."""
    parts = [f"# {title}\n", verdict_markdown(analysis.verdict, analysis.main), notes,
             concentration_markdown(analysis.concentration)]
    if cards is not None:
        parts += [vector_cards_markdown(cards)]
    parts += ["## Toxicity distance, perplexity and utility by method and α\n",
              "TOXICITY distance (the headline, as in the studies): mean over (user, prompt) of |TOXICITY(answer) − "
              "the TOXICITY the user preferred|. Attribute MAE: the same distance averaged over all the scorer's "
              "attributes (six for the Jigsaw-trained scorers, three of them near zero for almost every text, so it "
              "dilutes changes; with a one-label scorer it is the TOXICITY distance). Δ% is against "
              "the unsteered model on the same prompts and scorer.\n",
              main_table_markdown(analysis.main), "\n", fragile_note(analysis.main),
              utility_note(analysis.utility_questions, analysis.utility_format),
              f"*distinct-2*: share of distinct word bigrams per answer (1 = no repetition), averaged; an answer is "
              f"*collapsed* when that share is below {COLLAPSE_DISTINCT2} or a 4-word phrase recurs "
              f"{COLLAPSE_REPEATS}+ times; a cell with {100 * COLLAPSED_CELL_SHARE:.0f} % collapsed answers is marked ⚠ "
              "and never picked as a method's best below. Perplexity is under the unsteered model (self-perplexity "
              "for the baseline), so loops can look fluent by it: read it beside distinct-2. *cost ×*: wall seconds "
              "to generate one answer (decoding and any scorer calls the method makes; not the evaluation) ÷ the "
              "unsteered model's, in the same sweep run (‡: timed in different runs, so load or machine may "
              "differ). A method that answers several users with one answer pays it once.\n",
              "\n## Guards: relevance, refusals and boundary violations\n",
              "A less toxic answer is a win only if it still answers the request.\n",
              guards_markdown(analysis.guards),
              "\n## Where the change in TOXICITY comes from\n",
              "A drop carried by collapsed (looping), refusing or off-request answers, or by a single prompt, is not the "
              "claimed effect: each steered answer is counted in the first state that applies (collapsed, refused, "
              "off-request, intact), and the intact column compares steered and unsteered answers on the rows where "
              "steering left an answer to the request.\n", change_sources_markdown(analysis.change_sources), "\n",
              "\n## % change in distance by prompt category (negative = closer to the users)\n",
              category_table_markdown(analysis.categories), "\n",
              "## By user sensitivity: mean TOXICITY of the answers / TOXICITY distance\n",
              "Personalised steering should lower toxicity for strict users and may raise it for tolerant ones.\n",
              sensitivity_table_markdown(analysis.cells), "\n",
              sensitivity_effects_markdown(analysis.sensitivity_effects), "\n",
              "## Personalisation head to head: against population steering on the same rows\n",
              head_to_head_markdown(analysis.head_to_head, analysis.has_population),
              "\n### Boundary violations: how often an answer is more toxic than its user tolerates\n",
              "A sibling study on this task found per-user sensitivity shows here rather than in mean distance.\n",
              violations_markdown(analysis.head_to_head)]
    if analysis.ppa:
        parts += ["## Personalised preference accuracy (held-out pairs)\n",
                  ppa_markdown(analysis.ppa, analysis.ppa_toxicity_ties)]
    parts += ["## Plots\n"] + [f"![{p.stem}]({p.name})" for p in plots]
    if samples:
        parts += ["\n## Steered vs unsteered answers\n", samples]
    return "\n".join(parts) + "\n"
