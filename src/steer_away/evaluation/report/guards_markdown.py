"""The guards as Markdown: the report's opening verdict, relevance / refusals / boundary violations per cell,
group and category, and boundary violations head to head with population steering."""

from __future__ import annotations

import math
from collections.abc import Sequence

from steer_away.evaluation.metrics.base import MetricFigures
from steer_away.evaluation.metrics.base import change_text as _delta
from steer_away.evaluation.metrics.base import share as _share
from steer_away.evaluation.metrics.base import share_with_interval as _share_ci
from steer_away.evaluation.metrics.guards import OFF_REQUEST
from steer_away.evaluation.report.analysis import alpha_text, label, named
from steer_away.evaluation.report.guards import ALL, GUARDS, Verdict
from steer_away.evaluation.report.rows import GuardRow, HeadToHeadRow, MainRow
from steer_away.evaluation.report.states import REFUSALS, RELEVANCE
from steer_away.evaluation.summary import NAN
from steer_away.profiles import SENSITIVITIES


def verdict_markdown(verdict: Verdict, main: Sequence[MainRow]) -> str:
    """One sentence naming the best method of the run under the guards, and what it costs."""
    rule = (f"at most {100 * GUARDS.collapsed:.0f} % of answers collapsed, utility within "
            f"{100 * GUARDS.utility_drop:.0f} points of unsteered, relevance not significantly lower")
    row = verdict.row
    if row is None:
        tried = "; ".join(f"{name}: {why}" for name, why in verdict.failed.items())
        return (f"**No method brought answers closer to the users' preferred TOXICITY while passing the guards** "
                f"({rule})" + (f"; those that came closer failed them ({tried})." if tried else ".") + "\n")
    relevance = row.metric(RELEVANCE.name) or MetricFigures(NAN)
    refusals = row.metric(REFUSALS.name) or MetricFigures(NAN)
    ci = f" [{row.tox_delta_ci[0]:+.0f}, {row.tox_delta_ci[1]:+.0f}]" if row.tox_delta_ci else ""
    significant = bool(row.tox_delta_ci and row.tox_delta_ci[1] < 0)
    cost = f", at {row.cost_ratio:.2f}× the unsteered model's generation time" if math.isfinite(row.cost_ratio) else ""
    sentence = (f"**The best method of this run under the guards is {label(row.method, row.alpha, row.settings)}: "
                f"TOXICITY distance {row.tox_delta_pct:+.1f} %{ci} against the unsteered model"
                f"{'' if significant else ' (its interval includes 0)'}, relevance "
                f"{_delta(relevance.change, relevance.change_interval)} nats/token, {_share(refusals.value)} refused"
                f"{cost}.** Guards: {rule}.")
    if verdict.failed:
        sentence += " Better by distance but failing a guard: " + "; ".join(
            f"{name} ({why})" for name, why in verdict.failed.items()) + "."
    return sentence + "\n"


def guards_markdown(rows: Sequence[GuardRow]) -> str:
    """Per cell over all its answers and each user group; then relevance change by prompt category."""
    if not rows:
        return ""
    lines = [f"*relevance*: the unsteered model's PMI of the answer given its prompt against an empty request, "
             f"in nats per token (a refusal counts at most 0); Δ is against the unsteered answer to the same row, with "
             f"a user- and prompt-clustered 95 % interval (*: it excludes 0). *off-request*: relevance below "
             f"{OFF_REQUEST}. *violations*: answers more toxic than their user tolerates (halfway between the TOXICITY "
             f"they chose and the one they turned down, or what they chose if they turned down nothing more toxic).",
             "", "| run / method | α | users | rows | relevance | Δ relevance [95% CI] | refused | off-request | "
             "collapsed | violations [95% CI] |", "|---|---|---|---|---|---|---|---|---|---|"]
    scopes = (ALL, *SENSITIVITIES)
    for r in (r for r in rows if r.scope in scopes):
        f = r.figures
        lines.append(f"| {named(r.method, r.settings)} | {alpha_text(r.method, r.alpha)} | "
                     f"{r.scope} | {r.n} | {f.relevance:.2f} | {_delta(f.relevance_delta, f.relevance_delta_ci)} | "
                     f"{_share(f.refusal_share)} | {_share(f.off_request_share)} | {_share(f.collapsed_share)} | "
                     f"{_share_ci(f.violation_share, f.violation_share_ci)} |")
    categories = list(dict.fromkeys(r.scope for r in rows if r.scope not in scopes))
    cells = list(dict.fromkeys((r.method, r.alpha, r.settings) for r in rows))
    by = {(r.method, r.alpha, r.settings, r.scope): r for r in rows}
    lines += ["", "Δ relevance by prompt category:", "", "| run / method | α | " + " | ".join(categories) + " |",
              "|---|---|" + "---|" * len(categories)]
    for method, alpha, settings in cells:
        values = [by.get((method, alpha, settings, c)) for c in categories]
        lines.append(f"| {named(method, settings)} | {alpha_text(method, alpha)} | " + " | ".join(
            _delta(v.figures.relevance_delta, v.figures.relevance_delta_ci) if v else "-" for v in values) + " |")
    return "\n".join(lines) + "\n"


def violations_markdown(rows: Sequence[HeadToHeadRow]) -> str:
    """Boundary violations of each method whose answers depend on the user against population steering on
    the same rows, and the one sentence the issue of personalisation comes down to."""
    rows = [r for r in rows if math.isfinite(r.violation_share)]
    if not rows:
        return ""
    lines = ["| method | α | group | rows (users) | violations: method / population | Δ [95% CI] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {named(r.method, r.settings)} | {alpha_text(r.method, r.alpha)} | {r.group} | "
                     f"{r.n} ({r.users}) | {_share(r.violation_share)} / {_share(r.population_violation_share)} | "
                     + (f"{100 * r.violation_diff:+.1f} points [{100 * r.violation_diff_ci[0]:+.1f}, "
                        f"{100 * r.violation_diff_ci[1]:+.1f}]" if r.violation_diff_ci else "-")
                     + (" *" if r.violation_diff_ci and (r.violation_diff_ci[1] < 0 or r.violation_diff_ci[0] > 0) else "")
                     + " |")
    better = [r for r in rows if r.group != "all" and r.violation_diff_ci and r.violation_diff_ci[1] < 0]
    if better:
        sentence = ("Personalisation beats population steering on boundary violations for " + "; ".join(
            f"{r.group} users with {label(r.method, r.alpha, r.settings)} ({100 * r.violation_diff:+.1f} points)" for r in better)
            + ": the paired interval lies below 0.")
    else:
        sentence = ("Personalisation does not beat population steering on boundary violations for any user group "
                    "here: no paired interval lies below 0.")
    return "\n".join(lines) + "\n\n" + sentence + "\n"
