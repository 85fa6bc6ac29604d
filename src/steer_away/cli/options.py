"""Options several commands share, each defined once, and turning them into library objects."""

from __future__ import annotations

import argparse

from rich.markup import escape

from steer_away.cli import flags
from steer_away.cli.errors import UsageError
from steer_away.console import console, status
from steer_away.data.categories import CATEGORIES
from steer_away.data.prism import load_prism
from steer_away.data.prompts import (
    SHIPPED,
    PromptSplit,
    checked_prompts,
    heldout_openings,
    pick_per_category,
)
from steer_away.models import LanguageModel, LoadedModel, load_model
from steer_away.scoring import CachedScorer, make_scorer
from steer_away.scoring.registry import DEFAULT_BACKEND
from steer_away.steering.framework.arguments import MethodArgs
from steer_away.steering.framework.method import SteeringMethod
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.registry import build_method, default_method, get_method, method_names

PRISM_HELP = ("PRISM-shaped data: a folder of JSONL files, 'hub' for real PRISM, 'standin' (default: our synthetic "
              "stand-in) or 'contrast-fixture' (a tiny extreme-contrast set for machinery tests)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="hub id, local folder or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: auto)")


def load_model_from_args(args: argparse.Namespace) -> LoadedModel:
    with status(f"Loading model {args.model or 'embedded SmolLM2-135M-Instruct'}…"):
        return load_model(args.model, device=args.device)


def add_prism_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prism", default=None, help=PRISM_HELP)


def add_scorer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer", default=DEFAULT_BACKEND,
                        help="jigsaw-bilstm (offline), detoxify, perspective (ends 2026-12-31), or hf:<hub id or folder>"
                             "[@revision][?device=cuda&labels=toxic=TOXICITY,...]: any Hugging Face toxicity classifier")
    parser.add_argument("--score-cache", default=None, help="SQLite score cache (default: user cache folder)")


def scorer_from_args(args: argparse.Namespace) -> CachedScorer:
    return make_scorer(args.scorer, cache_path=args.score_cache)


def add_batch_size_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=flags.count(1), default=8)


def add_max_tokens_option(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--max-tokens", type=flags.count(1), default=default)


def add_prompt_set_options(parser: argparse.ArgumentParser) -> None:
    """--prompts FILE, else --n-prompts held-out opening prompts of --prism."""
    parser.add_argument("--prompts", default=None, help="'shipped' (our evaluation prompts) or a prompt file: JSON "
                                                        "lines or one prompt per line (default: held-out opening "
                                                        "prompts of --prism)")
    add_prism_option(parser)
    parser.add_argument("--n-prompts", type=flags.count(1), default=12)


def prompt_set(args: argparse.Namespace) -> list[str]:
    """The prompts --prompts names (our shipped set: --n-prompts of it, spread over the categories),
    else held-out openings of --prism, held out by the split stored with --vectors when the command
    takes vectors; a named prompt those vectors were trained on is refused."""
    vectors = getattr(args, "vectors", None)
    split = PromptSplit.stored_with(vectors)
    if not args.prompts:
        return heldout_openings(args.prism, args.n_prompts, split)
    training = split.pairs(load_prism(args.prism).turns)[0] if vectors else None
    prompts = checked_prompts(args.prompts, training, where=f"--prompts {args.prompts}")
    if args.prompts == SHIPPED:
        prompts = pick_per_category(prompts, -(-args.n_prompts // len(CATEGORIES)))[:args.n_prompts]
    return [p.text for p in prompts]


def add_categories_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--categories", default=None, help="steering-category TOML (default: shipped)")


def add_resource_options(parser: argparse.ArgumentParser) -> None:
    """What steering methods read: profiles, vectors and steering categories."""
    parser.add_argument("--vectors", "--vector", dest="vectors", default=None,
                        help="CAA: a vector store folder, a bank folder, a .safetensors vector or a .gguf control vector")
    parser.add_argument("--profiles", default=None, help="profiles JSON (users' sensitivity, for logit steering)")
    add_categories_option(parser)


def add_steering_options(parser: argparse.ArgumentParser) -> None:
    """--method, the resources it reads, and one flag per method argument (from the methods' argument
    dataclasses, so a new argument is a new flag with no change here)."""
    names = method_names()
    parser.add_argument("--method", choices=names, default=None, metavar="METHOD",
                        help="; ".join(f"{n}: {get_method(n).summary}" for n in names)
                        + " (default: the first vector method when --vectors is given, else the baseline)")
    add_resource_options(parser)
    parser.add_argument("--allow-other-model", action="store_true",
                        help="use vectors extracted under another model id (hidden size and depth are still checked)")
    group = parser.add_argument_group("method arguments (each method takes some of these; see --method)")
    for field, text in method_fields().items():
        group.add_argument(f"--{field.replace('_', '-')}", dest=f"arg_{field}", default=None, help=text)


def method_fields() -> dict[str, str]:
    """Every argument any registered method takes, with the first help text seen for it."""
    fields: dict[str, str] = {}
    for name in method_names():
        for field, text in get_method(name).args.field_help().items():
            fields.setdefault(field, text)
    return fields


def method_args_from_args(args: argparse.Namespace) -> tuple[str, MethodArgs]:
    """The method the flags name and its arguments from the per-argument flags (checked, nothing loaded)."""
    name = args.method or default_method(with_vectors=bool(args.vectors))
    entry = get_method(name)
    given = {field: getattr(args, f"arg_{field}") for field in method_fields()
             if getattr(args, f"arg_{field}", None) is not None}
    takes = set(entry.args.field_help())
    for field in given:
        if field not in takes:
            raise UsageError(f"--{field.replace('_', '-')} does not apply to {name} "
                             f"(it takes: {', '.join('--' + t.replace('_', '-') for t in sorted(takes)) or 'nothing'})")
    return name, entry.make_args(given, where=f"{name} (command line)")


def method_from_args(args: argparse.Namespace, lm: LanguageModel) -> SteeringMethod:
    """The method the flags name, with its arguments from the per-argument flags."""
    name, method_args = method_args_from_args(args)
    entry = get_method(name)
    resources = SteeringResources(lm, profiles=args.profiles, vectors=args.vectors, categories=args.categories,
                                  allow_other_model=args.allow_other_model, scorer=getattr(args, "scorer", None))
    if getattr(args, "user", None) and entry.needs.profiles and args.profiles and args.user not in resources.profiles():
        console.print(f"[yellow]user {escape(args.user)} has no profile; {name} uses its default for them[/yellow]")
    return build_method(name, method_args, resources)
