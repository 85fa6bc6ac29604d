"""`vectors extract | compose | export-gguf | import-gguf`: build, compose and convert steering vectors."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markdown import Markdown
from rich.markup import escape

from steer_away.cli import flags
from steer_away.cli.options import (
    add_batch_size_option,
    add_model_options,
    add_prism_option,
    add_scorer_options,
    load_model_from_args,
    scorer_from_args,
)
from steer_away.console import console, results, status
from steer_away.data.prism import load_prism
from steer_away.files import check_output
from steer_away.models import LanguageModel
from steer_away.profiles import load_profiles
from steer_away.steering.vectors.bank import (
    ACTIVATIONS_FILE,
    POPULATION_FILE,
    ExtractionSettings,
    compose_bank,
    extract_population,
)
from steer_away.steering.vectors.card import store_cards
from steer_away.steering.vectors.extract import load_pair_activations
from steer_away.steering.vectors.kinds import COMPOSED_KINDS
from steer_away.steering.vectors.layers import parse_layer_spec
from steer_away.steering.vectors.vector import SteeringVector, load_vector


def _extraction_settings(args: argparse.Namespace) -> ExtractionSettings:
    return ExtractionSettings(n_pairs=args.n_pairs, layers=(args.layers,), position=args.position,
                              min_margin=args.min_margin, holdout=args.holdout, seed=args.seed,
                              batch_size=args.batch_size)


def cmd_vectors_extract(args: argparse.Namespace) -> int:
    lm = load_model_from_args(args)
    data = load_prism(args.prism)
    console.print(escape(data.report.summary()))
    start = time.perf_counter()
    acts = extract_population(lm, data, _extraction_settings(args), args.out)
    elapsed = time.perf_counter() - start
    out = Path(args.out)
    norms = ", ".join(f"{l}:{n:.2f}" for l, n in zip(acts.layers, acts.diffs.mean(0).norm(dim=-1).tolist()))
    console.print(f"{len(acts.pairs)} pairs at layers {acts.layers[0]}-{acts.layers[-1]} in {elapsed:.1f}s "
                  f"({len(acts.pairs) / elapsed:.1f} pairs/s); ‖v_l‖ {norms}")
    console.print(f"wrote {out / POPULATION_FILE} and {out / ACTIVATIONS_FILE}")
    _print_cards(lm, out)
    return 0


def _print_cards(lm: LanguageModel, store: Path, users: list[str] | None = None) -> None:
    with status("Vector card: reading the respectful-vs-toxic contrast set…"):
        cards, banks = store_cards(lm, store, users)
    for card in cards:
        results.print(Markdown(card.markdown()))
        if card.toward_toxicity:
            results.print(f"[bold red]{escape(card.verdict)}[/bold red]")
    for bank in banks:
        results.print(Markdown(bank.markdown()))
    console.print(f"cards written to {store / 'cards.json'}")


def cmd_vectors_compose(args: argparse.Namespace) -> int:
    acts, shape = load_pair_activations(args.activations)
    profiles = load_profiles(args.profiles)
    scorer = scorer_from_args(args) if args.mode == "dislike" else None
    out = Path(args.out or Path(args.activations).parent / args.mode)
    vectors = compose_bank(acts, shape, args.mode, profiles, out, scorer=scorer, shrinkage=args.shrinkage,
                           bt_k=args.k, bt_l2=args.l2)
    console.print(f"wrote {len(vectors)} {args.mode} user vectors and the population default to {out}")
    if not args.no_card and (out.parent / POPULATION_FILE).is_file():
        _print_cards(load_model_from_args(args), out.parent)
    return 0


def cmd_vectors_export_gguf(args: argparse.Namespace) -> int:
    check_output(args.out, "GGUF control vector")
    vector = SteeringVector.load(args.vector)
    if args.layers:
        vector = vector.restricted(parse_layer_spec(args.layers, vector.num_layers))
    if args.scale != 1.0:
        vector = vector * args.scale
    path = vector.export_gguf(args.out, model_hint=args.model_hint)
    console.print(f"wrote {path}: llama.cpp control vector, layers {vector.layers[0]}-{vector.layers[-1]} "
                  f"as direction.{vector.layers[0]}-direction.{vector.layers[-1]}")
    return 0


def cmd_vectors_import_gguf(args: argparse.Namespace) -> int:
    check_output(args.out, "vector file")
    lm = load_model_from_args(args)
    vector = load_vector(args.gguf, lm)
    path = vector.save(args.out)
    console.print(f"wrote {path}: layers {vector.layers[0]}-{vector.layers[-1]} of {lm.model_id}")
    return 0


def add_vectors(sub: argparse._SubParsersAction) -> None:
    vec = sub.add_parser("vectors", help="steering vectors").add_subparsers(dest="action", required=True)
    ext = vec.add_parser("extract", help="population CAA vector from PRISM preference pairs")
    add_model_options(ext)
    add_prism_option(ext)
    ext.add_argument("--n-pairs", type=flags.count(1), default=200)
    ext.add_argument("--layers", default="seed", help="'seed' = the CAA study's 16-22 of 32, mapped by depth")
    ext.add_argument("--position", choices=["last", "mean"], default="last")
    ext.add_argument("--min-margin", type=flags.number(), default=0.0)
    ext.add_argument("--holdout", type=flags.number(0, 1), default=0.3, help="share of opening prompts kept out for evaluation")
    add_batch_size_option(ext)
    ext.add_argument("--seed", type=flags.count(0), default=0)
    ext.add_argument("--out", default="vectors", help="vector store folder")
    ext.set_defaults(func=cmd_vectors_extract)
    comp = vec.add_parser("compose", help="per-user vectors (dislike-weighted or Bradley–Terry basis)")
    comp.add_argument("--activations", default="vectors/pair_activations.safetensors")
    comp.add_argument("--profiles", required=True)
    comp.add_argument("--mode", choices=list(COMPOSED_KINDS), default="dislike")
    comp.add_argument("--k", type=flags.count(1), default=8, help="BT basis size")
    comp.add_argument("--l2", type=flags.number(0), default=1.0, help="BT regularisation")
    comp.add_argument("--shrinkage", type=flags.number(0), default=10.0, help="pseudo-pairs pulling users to the population")
    add_scorer_options(comp)
    comp.add_argument("--out", default=None, help="bank folder (default: next to the activations, named by mode)")
    comp.add_argument("--no-card", action="store_true", help="skip the vector card (it loads the model)")
    add_model_options(comp)
    comp.set_defaults(func=cmd_vectors_compose)
    exp = vec.add_parser("export-gguf", help="write a vector as a llama.cpp control vector")
    exp.add_argument("--vector", required=True, help="a .safetensors vector")
    exp.add_argument("--out", required=True, help="the .gguf file to write")
    exp.add_argument("--layers", default=None, help="only these layers ('15-20'); llama.cpp cannot steer layer 0")
    exp.add_argument("--scale", type=flags.number(), default=1.0, help="multiply the vector first (llama.cpp's strength)")
    exp.add_argument("--model-hint", default="llama", help="architecture name llama.cpp shows (default: llama)")
    exp.set_defaults(func=cmd_vectors_export_gguf)
    imp = vec.add_parser("import-gguf", help="read a llama.cpp / repeng control vector for this model")
    add_model_options(imp)
    imp.add_argument("--gguf", required=True, help="the control vector (.gguf)")
    imp.add_argument("--out", required=True, help="the .safetensors vector to write")
    imp.set_defaults(func=cmd_vectors_import_gguf)
