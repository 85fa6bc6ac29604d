"""The `steer-away` command line: thin wrappers that parse arguments and call the Python API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from steer_away.console import console, status


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def _load(args: argparse.Namespace):  # -> LoadedModel
    from steer_away.models import load_model

    with status(f"Loading model {args.model or 'embedded SmolLM2-135M-Instruct'}…"):
        return load_model(args.model, device=args.device)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="hub id, local folder or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: auto)")


def cmd_generate(args: argparse.Namespace) -> int:
    from steer_away.generation import GenerationConfig, generate
    from steer_away.steering.base import RowSteering

    lm = _load(args)
    method, rows = _steering_from_args(args, lm)
    config = GenerationConfig(max_new_tokens=args.max_tokens, do_sample=args.sample,
                              temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    prompts = args.prompt
    rows = rows or [RowSteering(user_id=args.user, alpha=args.alpha)] * len(prompts)
    with status("Generating…"):
        results = generate(lm, prompts, method=method, rows=rows * (len(prompts) // len(rows)), config=config)
    for prompt, result in zip(prompts, results):
        if len(prompts) > 1:
            console.print(f"[bold]> {prompt}[/bold]")
        print(result.text, flush=True)
    return 0


def _steering_from_args(args: argparse.Namespace, lm: object):
    """No steering unless asked; later issues add --vector and --method here."""
    return None, None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steer-away", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="answer prompts with the (optionally steered) model")
    _add_model_args(gen)
    gen.add_argument("--prompt", action="append", required=True, help="a user message (repeatable)")
    gen.add_argument("--max-tokens", type=int, default=128)
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=0.9)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--user", default=None, help="user id whose steering to apply")
    gen.add_argument("--alpha", type=float, default=None, help="steering strength")
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; finished work is kept[/yellow]")
        return 130
    except (UsageError, FileNotFoundError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    except RuntimeError as err:  # ModelLoadError and friends carry user-facing messages
        console.print(f"[red]error:[/red] {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
