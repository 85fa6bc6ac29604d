"""The `steer-away` command line: thin wrappers that parse arguments and call the Python API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rich.markup import escape

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
    method = _steering_from_args(args, lm)
    config = GenerationConfig(max_new_tokens=args.max_tokens, do_sample=args.sample,
                              temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    prompts = args.prompt
    rows = [RowSteering(user_id=args.user, alpha=args.alpha)] * len(prompts)
    with status("Generating…"):
        results = generate(lm, prompts, method=method, rows=rows, config=config)
    for prompt, result in zip(prompts, results):
        if len(prompts) > 1:
            console.print(f"[bold]> {escape(prompt)}[/bold]")
        print(result.text, flush=True)
    return 0


def _steering_from_args(args: argparse.Namespace, lm: object):
    """The steering method the generate / serve flags ask for (None: unsteered)."""
    method = args.method or ("caa" if args.vector else "none")
    if method == "none":
        return None
    if method == "caa":
        from steer_away import internals
        from steer_away.steering.activation import ActivationSteering
        from steer_away.steering.vectors import load_bank

        if not args.vector:
            raise UsageError("--method caa needs --vector (a vector file or bank folder)")
        population, users = load_bank(args.vector, lm)
        layers = internals.parse_layers(args.layers, internals.num_layers(lm.model)) if args.layers else None
        gate = int(args.gate) if str(args.gate).isdigit() else args.gate
        return ActivationSteering(users or population, alpha=DEFAULT_CAA_ALPHA, layers=layers, gate=gate,
                                  relative=args.relative, default=population)
    from steer_away.profiles import load_profiles
    from steer_away.steering.logits import LogitSteering, load_categories

    profiles = load_profiles(args.profiles) if args.profiles else {}
    if getattr(args, "user", None) and args.user not in profiles:
        console.print(f"[yellow]user {args.user} has no profile; using the default category[/yellow]")
    return LogitSteering(method, load_categories(args.categories), profiles)


DEFAULT_CAA_ALPHA = 0.5  # inside the usable window of raw vectors on SmolLM2 (|α| >= 1 degrades it)


def cmd_vectors_extract(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from steer_away import internals
    from steer_away.data.prism import load_prism, preference_pairs, sample_pairs, split_pairs
    from steer_away.steering.compose import population_vector
    from steer_away.steering.extract import extract_pair_activations, save_pair_activations

    lm = _load(args)
    data = load_prism(args.prism)
    console.print(escape(data.report.summary()))
    train, _ = split_pairs(preference_pairs(data.turns, min_margin=args.min_margin), holdout=args.holdout,
                           seed=args.seed)
    pairs = sample_pairs(train, args.n_pairs, seed=args.seed)
    layers = internals.parse_layers(args.layers, internals.num_layers(lm.model))
    start = time.perf_counter()
    acts = extract_pair_activations(lm, pairs, layers, position=args.position, batch_size=args.batch_size)
    elapsed = time.perf_counter() - start
    out = Path(args.out)
    save_pair_activations(acts, out / "pair_activations.safetensors", lm.shape)
    vector = population_vector(acts, lm.shape, seed=args.seed)
    vector.save(out / "population.safetensors")
    norms = ", ".join(f"{l}:{n:.2f}" for l, n in vector.norm().items())
    console.print(f"{len(pairs)} pairs at layers {layers[0]}-{layers[-1]} in {elapsed:.1f}s "
                  f"({len(pairs) / elapsed:.1f} pairs/s); ‖v_l‖ {norms}")
    console.print(f"wrote {out / 'population.safetensors'} and {out / 'pair_activations.safetensors'}")
    return 0


def cmd_vectors_compose(args: argparse.Namespace) -> int:
    from pathlib import Path

    from steer_away.profiles import load_profiles
    from steer_away.profiles.build import pair_toxicity_diffs
    from steer_away.scoring import make_scorer
    from steer_away.steering.compose import bt_vectors, dislike_vectors, population_vector
    from steer_away.steering.extract import load_pair_activations
    from steer_away.steering.vectors import save_bank

    acts, shape = load_pair_activations(args.activations)
    profiles = load_profiles(args.profiles)
    if args.mode == "dislike":
        scorer = make_scorer(args.scorer, cache_path=args.score_cache)
        gaps = -pair_toxicity_diffs(acts.pairs, scorer)[:, 0]
        vectors = dislike_vectors(acts, shape, gaps, shrinkage=args.shrinkage)
    else:
        vectors, _ = bt_vectors(acts, shape, k=args.k, l2=args.l2)
    vectors = {u: v for u, v in vectors.items() if u in profiles}
    for user, vector in vectors.items():
        vector.meta["sensitivity"] = profiles[user].sensitivity
    out = Path(args.out or Path(args.activations).parent / args.mode)
    save_bank(out, population_vector(acts, shape), vectors)
    console.print(f"wrote {len(vectors)} {args.mode} user vectors and the population default to {out}")
    return 0


def cmd_profiles_build(args: argparse.Namespace) -> int:
    import time

    from rich.table import Table

    from steer_away.data.prism import load_prism
    from steer_away.profiles import SensitivityRule, build_profiles, save_profiles
    from steer_away.scoring import make_scorer

    start = time.perf_counter()
    data = load_prism(args.prism)
    console.print(escape(data.report.summary()))
    for issue in data.report.issues[:20]:
        console.print(f"  [yellow]skipped[/yellow] {escape(str(issue))}")
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


def _print_main_table(main: list[dict], title: str) -> None:
    import math

    from rich.table import Table

    table = Table(title=title)
    for column in ("method", "α", "layers", "MAE ↓", "Δ% vs base", "PPL ↓", "MMLU", "TOXICITY", "n"):
        table.add_column(column, justify="left" if column in ("method", "layers") else "right",
                         no_wrap=column == "method")
    for r in main:
        delta = "-" if r["method"] == "unsteered" or math.isnan(r["delta_pct"]) else f"{r['delta_pct']:+.1f}%"
        mmlu = "-" if math.isnan(r["mmlu"]) else f"{100 * r['mmlu']:.1f}%"
        table.add_row(r["method"], "-" if r["alpha"] is None else f"{r['alpha']:g}", r["layers"] or "-",
                      f"{r['mae']:.4f}", delta, f"{r['ppl']:.2f}", mmlu, f"{r['toxicity']:.3f}", str(r["n"]))
    console.print(table)


def _run_sweep_and_report(config, args: argparse.Namespace, title: str) -> dict:
    from pathlib import Path

    from steer_away.evaluation.report import write_report
    from steer_away.evaluation.sweep import EvalContext, compute_ppa, run_sweep

    ray_address = None
    if getattr(args, "ray", None):
        ray_address = "local" if args.ray == "local" else args.ray
    result = run_sweep(config, ray_address=ray_address)
    ppa = {}
    if not getattr(args, "no_ppa", False):
        ctx = EvalContext(config)
        ppa = compute_ppa(ctx)
    out = Path(args.report or config.run_dir / "report")
    notes = (f"Model `{config.model or 'embedded SmolLM2-135M-Instruct'}`, scorer `{config.scorer}`, "
             f"data `{config.prism or 'synthetic PRISM-shaped fixture'}`. Sweep took {result.seconds:.0f}s "
             f"({len(result.computed)} cells computed, {len(result.skipped)} reused).\n")
    tables = write_report(config.run_dir / "results.sqlite", out, fingerprint=result.fingerprint, ppa=ppa,
                          title=title, notes=notes)
    _print_main_table(tables["main"], title)
    if ppa:
        console.print("PPA: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in ppa.items() if k != "pairs"))
    console.print(f"report: {out / 'report.md'} (+ main.csv, categories.csv, sweep.png)")
    return tables


def cmd_sweep(args: argparse.Namespace) -> int:
    from steer_away.evaluation.sweep import SweepConfig

    config = SweepConfig.from_toml(args.config)
    if args.out:
        config.out = args.out
    _run_sweep_and_report(config, args, f"sweep {config.name}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from steer_away.evaluation.report import write_report

    out = Path(args.out or Path(args.store).parent / "report")
    tables = write_report(args.store, out, fingerprint=args.fingerprint)
    _print_main_table(tables["main"], f"report of {args.store}")
    console.print(f"report: {out / 'report.md'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from steer_away.evaluation.sweep import SweepConfig
    from steer_away.resources import demo_sweep_path

    start = time.perf_counter()
    config = SweepConfig.from_toml(demo_sweep_path())
    config.out = args.out
    if args.quick:
        config.users_per_sensitivity, config.prompts_per_category, config.max_new_tokens = 1, 1, 24
        config.mmlu_limit = 8
    console.print(f"[bold]steer-away demo[/bold]: embedded SmolLM2-135M-Instruct, synthetic PRISM-shaped fixture, "
                  f"offline toxicity scorer → {config.out}")
    _run_sweep_and_report(config, args, "steer-away demo: steering toward each user's preferred toxicity")
    console.print(f"demo finished in {time.perf_counter() - start:.0f}s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from steer_away.server import ServerSettings, serve

    lm = _load(args)
    settings = ServerSettings(model_name=args.name, default_method=args.method or ("caa" if args.vectors else "none"),
                              api_key=args.api_key or os.environ.get("STEER_AWAY_API_KEY"), max_batch=args.max_batch,
                              max_queue=args.max_queue, max_tokens_limit=args.max_tokens_limit)
    console.print(f"serving {lm.model_id} as '{settings.model_name}' on http://{args.host}:{args.port} "
                  f"(default steering: {settings.default_method}; auth: {'on' if settings.api_key else 'off'})")
    serve(lm, args.host, args.port, profiles=args.profiles, vectors=args.vectors, categories=args.categories,
          settings=settings)
    return 0


def _add_steering_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=["none", "caa", "eads", "acd"], default=None,
                        help="steering method (default: caa when --vector is given, else none)")
    parser.add_argument("--vector", default=None, help="CAA: a .safetensors vector or a vector bank folder")
    parser.add_argument("--layers", default=None, help="CAA: '14-20', '3,5' or 'seed' (default: the vector's)")
    parser.add_argument("--gate", default="all", help="CAA: 'all', 'prefill', or K to steer the first K tokens")
    parser.add_argument("--relative", action="store_true", help="CAA: α as a fraction of the residual norm")
    parser.add_argument("--profiles", default=None, help="EADS/ACD: profiles JSON picking each user's category")
    parser.add_argument("--categories", default=None, help="EADS/ACD: steering-category TOML (default: shipped)")


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
    _add_steering_args(gen)
    gen.set_defaults(func=cmd_generate)


    vec = sub.add_parser("vectors", help="steering vectors").add_subparsers(dest="action", required=True)
    ext = vec.add_parser("extract", help="population CAA vector from PRISM preference pairs")
    _add_model_args(ext)
    ext.add_argument("--prism", default=None, help="PRISM folder or 'hub' (default: our fixture)")
    ext.add_argument("--n-pairs", type=int, default=200)
    ext.add_argument("--layers", default="seed", help="'seed' = the CAA study's 16-22 of 32, mapped by depth")
    ext.add_argument("--position", choices=["last", "mean"], default="last")
    ext.add_argument("--min-margin", type=float, default=0.0)
    ext.add_argument("--holdout", type=float, default=0.3, help="share of conversations kept out for evaluation")
    ext.add_argument("--batch-size", type=int, default=8)
    ext.add_argument("--seed", type=int, default=0)
    ext.add_argument("--out", default="vectors")
    ext.set_defaults(func=cmd_vectors_extract)
    comp = vec.add_parser("compose", help="per-user vectors (dislike-weighted or Bradley–Terry basis)")
    comp.add_argument("--activations", default="vectors/pair_activations.safetensors")
    comp.add_argument("--profiles", required=True)
    comp.add_argument("--mode", choices=["dislike", "bt"], default="dislike")
    comp.add_argument("--k", type=int, default=8, help="BT basis size")
    comp.add_argument("--l2", type=float, default=1.0, help="BT regularisation")
    comp.add_argument("--shrinkage", type=float, default=10.0, help="pseudo-pairs pulling users to the population")
    comp.add_argument("--scorer", default="jigsaw-bilstm")
    comp.add_argument("--score-cache", default=None)
    comp.add_argument("--out", default=None, help="bank folder (default: next to the activations, named by mode)")
    comp.set_defaults(func=cmd_vectors_compose)

    srv = sub.add_parser("serve", help="OpenAI-compatible chat server with per-user steering")
    _add_model_args(srv)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--profiles", default=None, help="profiles JSON (users' sensitivity for EADS / ACD)")
    srv.add_argument("--vectors", default=None, help="vector bank folder or file (CAA)")
    srv.add_argument("--categories", default=None, help="steering-category TOML (default: shipped)")
    srv.add_argument("--method", choices=["none", "caa", "eads", "acd"], default=None,
                     help="default steering when a request names none (default: caa with --vectors, else none)")
    srv.add_argument("--name", default="steer-away", help="model name the API reports")
    srv.add_argument("--api-key", default=None, help="require this bearer token (or set STEER_AWAY_API_KEY)")
    srv.add_argument("--max-batch", type=int, default=8)
    srv.add_argument("--max-queue", type=int, default=64)
    srv.add_argument("--max-tokens-limit", type=int, default=512)
    srv.set_defaults(func=cmd_serve)

    sw = sub.add_parser("sweep", help="evaluate a grid of methods × α × layers (resumable)")
    sw.add_argument("--config", required=True, help="sweep TOML (see src/steer_away/resources/demo_sweep.toml)")
    sw.add_argument("--out", default=None, help="run folder (overrides the config's)")
    sw.add_argument("--ray", nargs="?", const="local", default=None,
                    help="spread cells over Ray: a local instance, or ray://host:port")
    sw.add_argument("--report", default=None, help="report folder (default: <run folder>/report)")
    sw.add_argument("--no-ppa", action="store_true", help="skip personalised preference accuracy")
    sw.set_defaults(func=cmd_sweep)

    rep = sub.add_parser("report", help="tables and plots from a results store")
    rep.add_argument("--store", required=True, help="results.sqlite of a sweep")
    rep.add_argument("--out", default=None)
    rep.add_argument("--fingerprint", default=None, help="which sweep setup to report (default: the latest)")
    rep.set_defaults(func=cmd_report)

    demo = sub.add_parser("demo", help="the main job: profiles, vectors, a small sweep and a report")
    demo.add_argument("--out", default="steer-away-demo", help="run folder (report in <out>/report)")
    demo.add_argument("--quick", action="store_true", help="a tiny grid, for a smoke test")
    demo.add_argument("--report", default=None)
    demo.add_argument("--ray", nargs="?", const="local", default=None)
    demo.add_argument("--no-ppa", action="store_true")
    demo.set_defaults(func=cmd_demo)

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
        _print_error(err)
        return 2
    except RuntimeError as err:  # ModelLoadError and friends carry user-facing messages
        _print_error(err)
        return 1


def _print_error(err: Exception) -> None:
    from rich.text import Text

    # Text, not markup: messages quote config keys like [sweep] and paths that must print as they are.
    console.print(Text.assemble(("error: ", "bold red"), str(err)))


if __name__ == "__main__":
    sys.exit(main())
