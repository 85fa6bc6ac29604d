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


def cmd_profiles_build(args: argparse.Namespace) -> int:
    import time

    from rich.table import Table

    from steer_away.data.prism import load_prism
    from steer_away.profiles import SensitivityRule, build_profiles, save_profiles
    from steer_away.scoring import make_scorer

    start = time.perf_counter()
    data = load_prism(args.prism)
    console.print(data.report.summary())
    for issue in data.report.issues[:20]:
        console.print(f"  [yellow]skipped[/yellow] {issue}")
    scorer = make_scorer(args.scorer, cache_path=args.score_cache)
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
    console.print(table)
    counts = {s: sum(p.sensitivity == s for p in profiles.values()) for s in ("strict", "moderate", "tolerant")}
    console.print(f"sensitivity: {counts}; scorer calls {scorer.backend_calls}, cache hits {scorer.cache_hits}; "
                  f"wrote {args.out} in {time.perf_counter() - start:.1f}s")
    return 0


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

    prof = sub.add_parser("profiles", help="user toxicity profiles").add_subparsers(dest="action", required=True)
    build = prof.add_parser("build", help="build profiles from PRISM choices and toxicity scores")
    build.add_argument("--prism", default=None, help="folder of PRISM JSONL files, or 'hub' (default: our fixture)")
    build.add_argument("--scorer", default="jigsaw-bilstm", help="jigsaw-bilstm (offline), detoxify, perspective")
    build.add_argument("--score-cache", default=None, help="SQLite score cache (default: user cache folder)")
    build.add_argument("--out", default="profiles.json")
    build.add_argument("--strict-below", type=float, default=1 / 3, help="quantile (or value with --absolute)")
    build.add_argument("--tolerant-above", type=float, default=2 / 3, help="quantile (or value with --absolute)")
    build.add_argument("--absolute", action="store_true", help="thresholds are TOXICITY values, not quantiles")
    build.add_argument("--show", type=int, default=40, help="rows of the summary table")
    build.set_defaults(func=cmd_profiles_build)
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
