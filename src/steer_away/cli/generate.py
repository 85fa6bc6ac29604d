"""`generate` (answer prompts, optionally steered) and `methods` (list the steering methods)."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from steer_away.cli import flags
from steer_away.cli.options import add_model_options, add_steering_options, load_model_from_args, method_from_args
from steer_away.console import console, results, status
from steer_away.generation import GenerationConfig, generate
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.registry import get_method, method_names


def cmd_generate(args: argparse.Namespace) -> int:
    lm = load_model_from_args(args)
    method = method_from_args(args, lm)
    config = GenerationConfig.sampled(args.temperature, args.top_p, max_new_tokens=args.max_tokens, seed=args.seed) \
        if args.sample else GenerationConfig(max_new_tokens=args.max_tokens, seed=args.seed)
    prompts = args.prompt
    rows = [RowSteering(user_id=args.user)] * len(prompts)
    with status("Generating…"):
        results = generate(lm, prompts, method=method, rows=rows, config=config)
    for prompt, result in zip(prompts, results):
        if len(prompts) > 1:
            console.print(f"[bold]> {escape(prompt)}[/bold]")
        print(result.text, flush=True)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    table = Table(title="steering methods (use with --method, in sweep configs and in server requests)")
    for column in ("method", "what it does", "arguments (default)", "needs"):
        table.add_column(column)
    for name in method_names():
        entry = get_method(name)
        defaults = entry.args().identity()
        needs = [k.replace("_", " ") + (f" ({v})" if isinstance(v, str) else "")
                 for k, v in vars(entry.needs).items() if v]
        table.add_row(name, entry.summary, ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-",
                      ", ".join(needs) or "-")
    results.print(table)
    return 0


def add_generate(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="answer prompts with the (optionally steered) model")
    add_model_options(gen)
    gen.add_argument("--prompt", action="append", required=True, type=flags.text, help="a user message (repeatable)")
    gen.add_argument("--max-tokens", type=flags.count(1), default=128)
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=flags.number(0, 100), default=0.7)
    gen.add_argument("--top-p", type=flags.number(1e-9, 1), default=0.9)
    gen.add_argument("--seed", type=flags.count(0), default=None)
    gen.add_argument("--user", default=None, type=flags.text, help="user id whose steering to apply")
    add_steering_options(gen)
    gen.set_defaults(func=cmd_generate)


def add_methods(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("methods", help="list the steering methods and their arguments").set_defaults(func=cmd_methods)
