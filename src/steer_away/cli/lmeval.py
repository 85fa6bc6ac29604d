"""`lm-eval`: lm-evaluation-harness's own command line with our model registered as `steer-away`."""

from __future__ import annotations

import argparse
import sys

from steer_away.cli.errors import UsageError
from steer_away.paths import cache_root


def cmd_lmeval(args: argparse.Namespace) -> int:
    try:
        from lm_eval.__main__ import cli_evaluate

        from steer_away.lmeval import write_local_tasks
    except ImportError as err:
        raise UsageError(f"cannot import lm-evaluation-harness ({err}); steer-away's model is written for "
                         "lm-eval 0.4.13: pip install 'steer-away[lmeval]'") from None
    rest = list(args.rest)
    if not any(arg == "--include_path" or arg.startswith("--include_path=") for arg in rest):
        # lm-eval takes one folder: a user's own tasks folder replaces ours
        rest += ["--include_path", str(write_local_tasks(cache_root() / "lmeval_tasks"))]
    saved, sys.argv = sys.argv, ["lm-eval", *rest]  # lm-eval's command line reads sys.argv itself
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


def add_lmeval(sub: argparse._SubParsersAction) -> None:
    # '+' as the prefix: every '--flag' after the command is lm-eval's, passed through untouched.
    parser = sub.add_parser("lm-eval", add_help=False, prefix_chars="+",
                            help="lm-evaluation-harness with `--model steer-away` (any task under any method); "
                                 "adds our local tasks steer_away_mmlu / steer_away_cloze")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(func=cmd_lmeval)
