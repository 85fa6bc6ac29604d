"""`sweep` (evaluate a grid, then report), `report` (tables and plots from a store) and `demo`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from steer_away.cli.tables import print_main_table, print_ppa_table, print_results_json
from steer_away.console import console, results
from steer_away.data.prompts import HELDOUT, SHIPPED, prompt_source
from steer_away.evaluation.demo import DEMO_TITLE, demo_config, demo_preface
from steer_away.evaluation.pipeline import sweep_and_report
from steer_away.evaluation.report import write_report
from steer_away.evaluation.sweep import SweepConfig


def _sweep_and_print(config: SweepConfig, args: argparse.Namespace, title: str, preface: str = "") -> None:
    done = sweep_and_report(config, title=title, preface=preface, ray_address=args.ray, with_ppa=not args.no_ppa,
                            report_dir=args.report)
    report = done.report_dir / "report.md"
    if args.json:
        print_results_json(done.tables.main, done.tables.ppa, report)
        return
    print_main_table(done.tables.main, title)
    print_ppa_table(done.tables.ppa)
    results.print(f"report: {report} (+ main.csv, categories.csv, sweep.png)")


def cmd_sweep(args: argparse.Namespace) -> int:
    config = SweepConfig.from_toml(args.config)
    if args.out:
        config.out = args.out
    if args.prompts:
        config.prompts = prompt_source(args.prompts)
    _sweep_and_print(config, args, f"sweep {config.name}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out or Path(args.store).parent / "report")
    tables = write_report(args.store, out, fingerprint=args.fingerprint)
    if args.json:
        print_results_json(tables.main, tables.ppa, out / "report.md")
        return 0
    print_main_table(tables.main, f"report of {args.store}")
    results.print(f"report: {out / 'report.md'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    config = demo_config(args.out, quick=args.quick, prism=args.prism,
                         prompts=prompt_source(args.prompts) if args.prompts else None)
    console.print(f"[bold]steer-away demo[/bold]: embedded SmolLM2-135M-Instruct, synthetic PRISM stand-in, "
                  f"offline toxicity scorer → {config.out}")
    _sweep_and_print(config, args, DEMO_TITLE, preface=demo_preface(config))
    console.print(f"demo finished in {time.perf_counter() - start:.0f}s")
    return 0


def _add_prompts_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--prompts", default=None,
                        help=f"which prompts to answer: '{SHIPPED}' (our 220), '{HELDOUT}' (held-out opening prompts of "
                             f"the data) or a prompt file, JSON lines or one prompt a line (default: {default})")


def _add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the main table and PPA as JSON on stdout instead of tables (progress stays on stderr)")


def add_sweep(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="evaluate a grid of methods × α × layers (resumable)")
    sw.add_argument("--config", required=True, help="sweep TOML (see src/steer_away/resources/demo_sweep.toml)")
    sw.add_argument("--out", default=None, help="run folder (overrides the config's)")
    sw.add_argument("--ray", nargs="?", const="local", default=None,
                    help="spread cells over Ray: a local instance, or ray://host:port")
    sw.add_argument("--report", default=None, help="report folder (default: <run folder>/report)")
    sw.add_argument("--no-ppa", action="store_true", help="skip personalised preference accuracy")
    _add_prompts_option(sw, "the config's")
    _add_json_option(sw)
    sw.set_defaults(func=cmd_sweep)


def add_report(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="tables and plots from a results store")
    rep.add_argument("--store", required=True, help="results.sqlite of a sweep")
    rep.add_argument("--out", default=None)
    rep.add_argument("--fingerprint", default=None, help="which sweep setup to report (default: the latest)")
    _add_json_option(rep)
    rep.set_defaults(func=cmd_report)


def add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the main job: profiles, vectors, a small sweep and a report")
    demo.add_argument("--out", default="steer-away-demo", help="run folder (report in <out>/report)")
    demo.add_argument("--quick", action="store_true", help="a tiny grid, for a smoke test")
    demo.add_argument("--report", default=None)
    demo.add_argument("--ray", nargs="?", const="local", default=None)
    demo.add_argument("--no-ppa", action="store_true")
    demo.add_argument("--prism", default=None, help="PRISM data instead of the stand-in: 'hub' or a folder "
                                                    "(the prompts become its held-out opening prompts)")
    _add_prompts_option(demo, "'shipped'")
    _add_json_option(demo)
    demo.set_defaults(func=cmd_demo)
