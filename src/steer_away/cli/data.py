"""`data stats` (how PRISM-like a data set is) and `data standin` (write the synthetic stand-in)."""

from __future__ import annotations

import argparse
import json

from rich.markup import escape
from rich.table import Table

from steer_away.cli import flags
from steer_away.cli.options import add_prism_option, add_scorer_options, scorer_from_args
from steer_away.console import console, results, status
from steer_away.data.prism import load_prism
from steer_away.data.standin import StandinSpec, write_standin
from steer_away.profiles.statistics import dataset_statistics


def cmd_data_stats(args: argparse.Namespace) -> int:
    data = load_prism(args.prism)
    console.print(escape(data.report.summary()))
    scorer = scorer_from_args(args)
    with status(f"Scoring responses with {scorer.backend}…"):
        stats = dataset_statistics(data, scorer)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=1))
        return 0
    table = Table(title=f"{args.prism or 'synthetic PRISM stand-in'} (TOXICITY by {scorer.backend})")
    for column in ("figure", "this data", "PRISM / target"):
        table.add_column(column)
    for row in stats.rows():
        table.add_row(*row)
    results.print(table)
    misses = [name for name, ok in stats.meets_targets().items() if not ok]
    results.print("[green]meets the toxicity targets[/green]" if not misses
                  else f"[yellow]misses the targets: {', '.join(misses)}[/yellow]")
    return 0


def cmd_data_standin(args: argparse.Namespace) -> int:
    out = write_standin(args.out, StandinSpec(n_users=args.users, seed=args.seed))
    console.print(f"wrote a synthetic PRISM stand-in ({args.users} users, seed {args.seed}) to {out}; "
                  f"read it with --prism {out}")
    return 0


def add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="PRISM-shaped data").add_subparsers(dest="action", required=True)
    stats = data.add_parser("stats", help="how PRISM-like the data is: shape, ratings, toxicity ties, preferences")
    add_prism_option(stats)
    add_scorer_options(stats)
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    stats.set_defaults(func=cmd_data_stats)
    standin = data.add_parser("standin", help="write our synthetic PRISM stand-in to a folder")
    standin.add_argument("--out", required=True)
    standin.add_argument("--users", type=flags.count(1), default=300)
    standin.add_argument("--seed", type=flags.count(0), default=0)
    standin.set_defaults(func=cmd_data_standin)
