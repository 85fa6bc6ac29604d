"""The `steer-away` command line: thin wrappers that parse arguments and call the Python API."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from steer_away.cli.calibrate import add_calibrate, add_categories
from steer_away.cli.data import add_data
from steer_away.cli.errors import exit_code, print_error
from steer_away.cli.generate import add_generate, add_methods
from steer_away.cli.lmeval import add_lmeval
from steer_away.cli.profiles import add_profiles
from steer_away.cli.serve import add_serve
from steer_away.cli.sweep import add_demo, add_report, add_sweep
from steer_away.cli.vectors import add_vectors
from steer_away.console import console, show_library_messages

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steer-away", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_generate, add_calibrate, add_categories, add_methods, add_vectors, add_serve, add_sweep,
                add_report, add_demo, add_data, add_profiles, add_lmeval):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A user's error prints one line (exit 2, or 1 when the environment refused);
    any other exception is a bug and keeps its traceback, as does every error under --debug."""
    args = build_parser().parse_args(argv)
    show_library_messages()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; finished work is kept[/yellow]")
        return 130
    except Exception as err:
        code = exit_code(err)
        if code is None or args.debug:
            raise
        print_error(err)
        return code
