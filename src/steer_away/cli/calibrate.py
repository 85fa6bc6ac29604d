"""`calibrate` (the α range where a method works) and `categories check` (do the logit branches differ)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from steer_away.cli import flags
from steer_away.cli.errors import UsageError
from steer_away.cli.options import (
    add_batch_size_option,
    add_categories_option,
    add_max_tokens_option,
    add_model_options,
    add_prompt_set_options,
    add_scorer_options,
    add_steering_options,
    load_model_from_args,
    method_args_from_args,
    method_from_args,
    prompt_set,
    scorer_from_args,
)
from steer_away.console import console, results, status
from steer_away.evaluation.branches.contrast import branch_contrasts
from steer_away.evaluation.branches.measure import check_branches
from steer_away.evaluation.calibrate import calibrate, save_calibration
from steer_away.files import check_output
from steer_away.steering.framework.categories import load_categories
from steer_away.steering.registry import get_method

VERDICTS = {
    "differ": "[green]branches differ[/green]",
    "inverted": "[green]branches differ, the expert being the edgier (an inverted design)[/green]",
    "barely": "[yellow]branches barely differ: the contrast carries little toxicity signal[/yellow]",
}


def cmd_calibrate(args: argparse.Namespace) -> int:
    items = [a.strip() for a in args.alphas.split(",")]
    try:
        alphas = [float(a) for a in items]
    except ValueError:
        raise UsageError(f"--alphas must be comma-separated numbers, got {args.alphas!r}") from None
    if not alphas or not all(math.isfinite(a) for a in alphas):
        raise UsageError(f"--alphas must be comma-separated finite numbers, got {args.alphas!r}")
    check_output(Path(args.out) / "calibration.json", "calibration")  # before the work, not after it
    name, method_args = method_args_from_args(args)
    if get_method(name).strength_of(method_args) is None:
        raise UsageError(f"{name} has no strength α to calibrate (a row's α changes nothing in it); compare its "
                         "arguments in a sweep instead, e.g. a list of values in its [[methods]] table")
    prompts = prompt_set(args)
    lm = load_model_from_args(args)
    method = method_from_args(args, lm)
    scorer = scorer_from_args(args)
    result = calibrate(lm, method, prompts, alphas, scorer, name=name, user=args.user, category=args.category,
                       direction=args.direction, max_new_tokens=args.max_tokens, batch_size=args.batch_size,
                       max_collapsed=args.max_collapsed, max_distinct_drop=args.max_distinct_drop,
                       max_ppl_ratio=args.max_ppl_ratio)
    table = Table(title=f"calibration of {name} on {len(prompts)} prompts")
    for column in ("α", "TOXICITY [95% CI]", "Δ vs α=0 [paired 95% CI]", "distinct-2", "collapsed", "PPL", "usable",
                   "most toxic answer"):
        table.add_column(column)
    for p in result.points:
        table.add_row(f"{p.alpha:g}", f"{p.toxicity:.3f} [{p.toxicity_ci[0]:.3f}, {p.toxicity_ci[1]:.3f}]",
                      f"{p.change:+.3f} [{p.change_ci[0]:+.3f}, {p.change_ci[1]:+.3f}]",
                      f"{p.distinct2:.2f}", f"{100 * p.collapsed_share:.0f}%", f"{p.perplexity:.1f}",
                      "yes" if p.usable else "[red]no[/red]", escape(p.sample[:70]))
    results.print(table)
    results.print(escape(result.summary()))
    files = save_calibration(result, args.out)
    console.print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def cmd_categories_check(args: argparse.Namespace) -> int:
    categories = load_categories(args.categories)
    if args.category:
        unknown = [c for c in args.category if c not in categories]
        if unknown:
            raise UsageError(f"unknown category {unknown[0]!r} (have {', '.join(sorted(categories))})")
        categories = {c: categories[c] for c in args.category}
    prompts = prompt_set(args)
    lm = load_model_from_args(args)
    scorer = scorer_from_args(args)
    with status(f"Answering {len(prompts)} prompts with each branch…"):
        rows = check_branches(lm, categories, prompts, scorer, max_new_tokens=args.max_tokens,
                              batch_size=args.batch_size)
    table = Table(title=f"TOXICITY of each branch's own greedy answers ({len(prompts)} prompts, {scorer.backend})")
    for column in ("category", "branch", "mean TOXICITY [95% CI]", "most toxic answer"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.category, r.branch, f"{r.mean:.3f} [{r.ci[0]:.3f}, {r.ci[1]:.3f}]", escape(r.most_toxic[:80]))
    results.print(table)
    for contrast in branch_contrasts(rows, categories):
        results.print(f"{contrast.category}: anti-expert − expert TOXICITY {contrast.gap:+.3f}: "
                      f"{VERDICTS[contrast.verdict]}")
    return 0


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    cal = sub.add_parser("calibrate", help="find the α range where a method changes TOXICITY before text breaks")
    add_model_options(cal)
    add_steering_options(cal)
    cal.add_argument("--alphas", default="0.25,0.5,1,2,4,8", help="comma-separated strengths (α = 0 is added)")
    cal.add_argument("--user", default=None, help="calibrate the steering of this user (personal methods)")
    cal.add_argument("--category", default=None, help="logit steering: the category to calibrate")
    cal.add_argument("--direction", choices=["lower", "higher"], default="lower",
                     help="which way TOXICITY should move (default: lower)")
    add_prompt_set_options(cal)
    add_max_tokens_option(cal, 40)
    add_batch_size_option(cal)
    cal.add_argument("--max-collapsed", type=flags.number(0, 1), default=0.1, help="largest usable share of collapsed answers")
    cal.add_argument("--max-distinct-drop", type=flags.number(0, 1), default=0.1, help="largest usable drop in distinct-2")
    cal.add_argument("--max-ppl-ratio", type=flags.number(above=0), default=2.0,
                     help="largest usable median perplexity, as a multiple of the unsteered answers'")
    add_scorer_options(cal)
    cal.add_argument("--out", default="calibration", help="folder for calibration.json and calibration.png")
    cal.set_defaults(func=cmd_calibrate)


def add_categories(sub: argparse._SubParsersAction) -> None:
    cats = sub.add_parser("categories", help="logit-steering categories").add_subparsers(dest="action", required=True)
    check = cats.add_parser("check", help="TOXICITY of each category's base, expert and anti-expert answers")
    add_model_options(check)
    add_categories_option(check)
    check.add_argument("--category", action="append", default=None, help="only this category (repeatable)")
    add_prompt_set_options(check)
    add_max_tokens_option(check, 40)
    add_batch_size_option(check)
    add_scorer_options(check)
    check.set_defaults(func=cmd_categories_check)
