"""`profiles build`: each user's preferred toxicity and sensitivity from their PRISM choices."""

from __future__ import annotations

import argparse
import time

from rich.markup import escape
from rich.table import Table

from steer_away.cli import flags
from steer_away.cli.options import add_prism_option, add_scorer_options, scorer_from_args
from steer_away.console import console, results, status
from steer_away.data.prism import load_prism
from steer_away.files import check_output
from steer_away.profiles import SensitivityRule, build_profiles, save_profiles


def cmd_profiles_build(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    check_output(args.out, "profiles file")  # before the work, not after it
    data = load_prism(args.prism)
    console.print(escape(data.report.summary()))
    for issue in data.report.issues[:20]:
        console.print(f"  [yellow]skipped[/yellow] {escape(str(issue))}")
    scorer = scorer_from_args(args)
    with status(f"Scoring responses with {scorer.backend}…"):
        profiles = build_profiles(data, scorer, rule=SensitivityRule(args.strict_below, args.tolerant_above,
                                                                     absolute=args.absolute))
    save_profiles(profiles, args.out, scorer.backend)
    table = Table(title=f"{len(profiles)} user profiles ({scorer.backend})")
    for column in ("user", "pairs", "preferred TOXICITY", "dislike", "stated safety", "sensitivity"):
        table.add_column(column, justify="left" if column in ("user", "sensitivity") else "right")
    for p in list(profiles.values())[: args.show]:
        table.add_row(p.user_id, str(p.n_pairs), f"{p.primary():.3f}", f"{p.dislike:+.3f}",
                      "-" if p.stated_safety is None else f"{p.stated_safety:.0f}", p.sensitivity)
    results.print(table)
    counts = {s: sum(p.sensitivity == s for p in profiles.values()) for s in ("strict", "moderate", "tolerant")}
    results.print(f"sensitivity: {counts}; scorer calls {scorer.backend_calls}, cache hits {scorer.cache_hits}; "
                  f"wrote {args.out} in {time.perf_counter() - start:.1f}s")
    return 0


def add_profiles(sub: argparse._SubParsersAction) -> None:
    prof = sub.add_parser("profiles", help="user toxicity profiles").add_subparsers(dest="action", required=True)
    build = prof.add_parser("build", help="build profiles from PRISM choices and toxicity scores")
    add_prism_option(build)
    add_scorer_options(build)
    build.add_argument("--out", default="profiles.json")
    build.add_argument("--strict-below", type=flags.number(0, 1), default=1 / 3, help="quantile (or value with --absolute)")
    build.add_argument("--tolerant-above", type=flags.number(0, 1), default=2 / 3, help="quantile (or value with --absolute)")
    build.add_argument("--absolute", action="store_true", help="thresholds are TOXICITY values, not quantiles")
    build.add_argument("--show", type=flags.count(0), default=40, help="rows of the summary table")
    build.set_defaults(func=cmd_profiles_build)
