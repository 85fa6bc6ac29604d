"""The `steer-away` command line: thin wrappers that parse arguments and call the Python API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from steer_away.console import console, status
from steer_away.steering.bank import COMPOSE_MODES

if TYPE_CHECKING:
    from steer_away.evaluation.sweep import SweepConfig
    from steer_away.models import LanguageModel, LoadedModel
    from steer_away.steering.bank import ExtractionSettings
    from steer_away.steering.base import SteeringMethod


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


PRISM_HELP = ("PRISM-shaped data: a folder of JSONL files, 'hub' for real PRISM, 'standin' (default: our synthetic "
              "stand-in) or 'contrast-fixture' (a tiny extreme-contrast set for machinery tests)")


def _load(args: argparse.Namespace) -> LoadedModel:
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
    method = _method_from_args(args, lm)
    config = GenerationConfig(max_new_tokens=args.max_tokens, do_sample=args.sample,
                              temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    prompts = args.prompt
    rows = [RowSteering(user_id=args.user)] * len(prompts)
    with status("Generating…"):
        results = generate(lm, prompts, method=method, rows=rows, config=config)
    for prompt, result in zip(prompts, results):
        if len(prompts) > 1:
            console.print(f"[bold]> {escape(prompt)}[/bold]")
        print(result.text, flush=True)
    return 0


def _method_from_args(args: argparse.Namespace, lm: LanguageModel) -> SteeringMethod:
    """The method the flags name, with its arguments from the per-argument flags."""
    from steer_away.steering.registry import SteeringResources, build_method, default_method, get_method

    name = args.method or default_method(with_vectors=bool(args.vector))
    entry = get_method(name)
    given = {field: getattr(args, f"arg_{field}") for field in _method_fields()
             if getattr(args, f"arg_{field}", None) is not None}
    takes = set(entry.args.field_help())
    for field in given:
        if field not in takes:
            raise UsageError(f"--{field.replace('_', '-')} does not apply to {name} "
                             f"(it takes: {', '.join('--' + t.replace('_', '-') for t in sorted(takes)) or 'nothing'})")
    method_args = entry.make_args(given, where=f"{name} (command line)")
    resources = SteeringResources(lm, profiles=args.profiles, vectors=args.vector, categories=args.categories,
                                  allow_other_model=args.allow_other_model)
    if getattr(args, "user", None) and entry.needs.profiles and args.profiles and args.user not in resources.profiles():
        console.print(f"[yellow]user {escape(args.user)} has no profile; {name} uses its default for them[/yellow]")
    return build_method(name, method_args, resources)


def _method_fields() -> dict[str, str]:
    """Every argument any registered method takes, with the first help text seen for it."""
    from steer_away.steering.registry import get_method, method_names

    fields: dict[str, str] = {}
    for name in method_names():
        for field, text in get_method(name).args.field_help().items():
            fields.setdefault(field, text)
    return fields


def _extraction_settings(args: argparse.Namespace) -> ExtractionSettings:
    from steer_away.steering.bank import ExtractionSettings

    return ExtractionSettings(n_pairs=args.n_pairs, layers=(args.layers,), position=args.position,
                              min_margin=args.min_margin, holdout=args.holdout, seed=args.seed,
                              batch_size=args.batch_size)


def cmd_vectors_extract(args: argparse.Namespace) -> int:
    import time

    from steer_away.data.prism import load_prism
    from steer_away.steering.bank import ACTIVATIONS_FILE, POPULATION_FILE, extract_population

    lm = _load(args)
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
    from rich.markdown import Markdown

    from steer_away.steering.card import store_cards

    with status("Vector card: reading the respectful-vs-toxic contrast set…"):
        cards, banks = store_cards(lm, store, users)
    for card in cards:
        console.print(Markdown(card.markdown()))
        if card.toward_toxicity:
            console.print(f"[bold red]{escape(card.verdict)}[/bold red]")
    for bank in banks:
        console.print(Markdown(bank.markdown()))
    console.print(f"cards written to {store / 'cards.json'}")


def cmd_vectors_compose(args: argparse.Namespace) -> int:

    from steer_away.profiles import load_profiles
    from steer_away.scoring import make_scorer
    from steer_away.steering.bank import POPULATION_FILE, compose_bank
    from steer_away.steering.extract import load_pair_activations

    acts, shape = load_pair_activations(args.activations)
    profiles = load_profiles(args.profiles)
    scorer = make_scorer(args.scorer, cache_path=args.score_cache) if args.mode == "dislike" else None
    out = Path(args.out or Path(args.activations).parent / args.mode)
    vectors = compose_bank(acts, shape, args.mode, profiles, out, scorer=scorer, shrinkage=args.shrinkage,
                           bt_k=args.k, bt_l2=args.l2)
    console.print(f"wrote {len(vectors)} {args.mode} user vectors and the population default to {out}")
    if not args.no_card and (out.parent / POPULATION_FILE).is_file():
        _print_cards(_load(args), out.parent)
    return 0


def cmd_vectors_export_gguf(args: argparse.Namespace) -> int:
    from steer_away import internals
    from steer_away.steering.vectors import SteeringVector

    vector = SteeringVector.load(args.vector)
    if args.layers:
        vector = vector.restricted(internals.parse_layers(args.layers, vector.num_layers))
    if args.scale != 1.0:
        vector = vector * args.scale
    path = vector.export_gguf(args.out, model_hint=args.model_hint)
    console.print(f"wrote {path}: llama.cpp control vector, layers {vector.layers[0]}-{vector.layers[-1]} "
                  f"as direction.{vector.layers[0]}-direction.{vector.layers[-1]}")
    return 0


def cmd_vectors_import_gguf(args: argparse.Namespace) -> int:
    from steer_away.steering.vectors import load_vector

    lm = _load(args)
    vector = load_vector(args.gguf, lm)
    path = vector.save(args.out)
    console.print(f"wrote {path}: layers {vector.layers[0]}-{vector.layers[-1]} of {lm.model_id}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from rich.table import Table

    from steer_away.steering.registry import get_method, method_names

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
    console.print(table)
    return 0


def _heldout_openings(prism: str | None, n: int, holdout: float = 0.3, seed: int = 0) -> list[str]:
    """Opening prompts no vector was extracted from (the held-out side of the prompt split), taken
    round-robin over the prompt categories."""
    from steer_away.data.categories import CategoryRule
    from steer_away.data.prism import load_prism, preference_pairs, split_pairs

    _, held = split_pairs(preference_pairs(load_prism(prism).turns), holdout=holdout, seed=seed)
    rule = CategoryRule()
    by_category: dict[str, list[str]] = {}
    for pair in held:
        category = rule.categorise(pair.opening, pair.conversation_type)
        if pair.opening not in by_category.setdefault(category, []):
            by_category[category].append(pair.opening)
    queues = [sorted(v) for _, v in sorted(by_category.items())]
    out: list[str] = []
    while len(out) < n and any(queues):
        for queue in queues:
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


def _prompt_set(args: argparse.Namespace) -> list[str]:
    """--prompts FILE (one prompt per line), else `--n-prompts` held-out opening prompts of --prism."""
    if args.prompts:
        return [line.strip() for line in Path(args.prompts).read_text(encoding="utf-8").splitlines() if line.strip()]
    return _heldout_openings(args.prism, args.n_prompts)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from steer_away.evaluation.calibrate import calibrate, save_calibration
    from steer_away.scoring import make_scorer

    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        raise UsageError(f"--alphas must be comma-separated numbers, got {args.alphas!r}") from None
    prompts = _prompt_set(args)
    lm = _load(args)
    method = _method_from_args(args, lm)
    scorer = make_scorer(args.scorer, cache_path=args.score_cache)
    name = args.method or type(method).__name__
    result = calibrate(lm, method, prompts, alphas, scorer, name=name, user=args.user, category=args.category,
                       direction=args.direction, max_new_tokens=args.max_tokens, batch_size=args.batch_size,
                       max_collapsed=args.max_collapsed, max_distinct_drop=args.max_distinct_drop,
                       max_ppl_ratio=args.max_ppl_ratio)
    from rich.table import Table

    table = Table(title=f"calibration of {name} on {len(prompts)} prompts")
    for column in ("α", "TOXICITY [95% CI]", "Δ vs α=0 [paired 95% CI]", "distinct-2", "collapsed", "PPL", "usable",
                   "most toxic answer"):
        table.add_column(column)
    for p in result.points:
        table.add_row(f"{p.alpha:g}", f"{p.toxicity:.3f} [{p.toxicity_ci[0]:.3f}, {p.toxicity_ci[1]:.3f}]",
                      f"{p.change:+.3f} [{p.change_ci[0]:+.3f}, {p.change_ci[1]:+.3f}]",
                      f"{p.distinct2:.2f}", f"{100 * p.collapsed_share:.0f}%", f"{p.perplexity:.1f}",
                      "yes" if p.usable else "[red]no[/red]", escape(p.sample[:70]))
    console.print(table)
    console.print(escape(result.summary()))
    files = save_calibration(result, args.out)
    console.print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def cmd_categories_check(args: argparse.Namespace) -> int:
    from rich.table import Table

    from steer_away.evaluation.branches import check_branches
    from steer_away.scoring import make_scorer
    from steer_away.steering.logits import load_categories

    categories = load_categories(args.categories)
    if args.category:
        unknown = [c for c in args.category if c not in categories]
        if unknown:
            raise UsageError(f"unknown category {unknown[0]!r} (have {', '.join(sorted(categories))})")
        categories = {c: categories[c] for c in args.category}
    prompts = _prompt_set(args)
    lm = _load(args)
    scorer = make_scorer(args.scorer, cache_path=args.score_cache)
    with status(f"Answering {len(prompts)} prompts with each branch…"):
        rows = check_branches(lm, categories, prompts, scorer, max_new_tokens=args.max_tokens,
                              batch_size=args.batch_size)
    table = Table(title=f"TOXICITY of each branch's own greedy answers ({len(prompts)} prompts, {scorer.backend})")
    for column in ("category", "branch", "mean TOXICITY [95% CI]", "most toxic answer"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.category, r.branch, f"{r.mean:.3f} [{r.ci[0]:.3f}, {r.ci[1]:.3f}]", escape(r.most_toxic[:80]))
    console.print(table)
    by = {(r.category, r.branch): r.mean for r in rows}
    for name in categories:
        gap = by[(name, "anti_expert")] - by[(name, "expert")]
        verdict = ("[green]branches differ[/green]" if gap > 0.1 else
                   "[green]branches differ, the expert being the edgier (an inverted design)[/green]" if gap < -0.1
                   else "[yellow]branches barely differ: the contrast carries little toxicity signal[/yellow]")
        console.print(f"{name}: anti-expert − expert TOXICITY {gap:+.3f}: {verdict}")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from steer_away.data.prism import load_prism
    from steer_away.profiles.statistics import dataset_statistics
    from steer_away.scoring import make_scorer

    data = load_prism(args.prism)
    console.print(escape(data.report.summary()))
    scorer = make_scorer(args.scorer, cache_path=args.score_cache)
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
    console.print(table)
    misses = [name for name, ok in stats.meets_targets().items() if not ok]
    console.print("[green]meets the toxicity targets[/green]" if not misses
                  else f"[yellow]misses the targets: {', '.join(misses)}[/yellow]")
    return 0


def cmd_data_standin(args: argparse.Namespace) -> int:
    from steer_away.data.standin import StandinSpec, write_standin

    out = write_standin(args.out, StandinSpec(n_users=args.users, seed=args.seed))
    console.print(f"wrote a synthetic PRISM stand-in ({args.users} users, seed {args.seed}) to {out}; "
                  f"read it with --prism {out}")
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


def _print_main_table(main: list[dict[str, Any]], title: str) -> None:
    import math

    from rich.table import Table

    from steer_away.steering.registry import BASELINE

    table = Table(title=title)
    for column in ("method", "α", "settings", "TOX dist ↓", "Δ% vs base", "MAE ↓", "PPL ↓", "collapsed", "MMLU",
                   "TOXICITY", "n"):
        table.add_column(column, justify="left" if column in ("method", "settings") else "right",
                         no_wrap=column == "method")
    for r in main:
        delta = "-" if r["method"] == BASELINE or math.isnan(r["tox_delta_pct"]) else f"{r['tox_delta_pct']:+.1f}%"
        mmlu = "-" if math.isnan(r["mmlu"]) else f"{100 * r['mmlu']:.1f}%"
        collapsed = "-" if math.isnan(r["collapsed_share"]) else \
            f"{100 * r['collapsed_share']:.0f}%" + (" ⚠" if r["collapsed"] else "")
        table.add_row(r["method"], "-" if r["alpha"] is None else f"{r['alpha']:g}", r["settings"] or "-",
                      f"{r['tox_dist']:.4f}", delta, f"{r['mae']:.4f}", f"{r['ppl']:.2f}", collapsed, mmlu,
                      f"{r['toxicity']:.3f}", str(r["n"]))
    console.print(table)


def _run_sweep_and_report(config: SweepConfig, args: argparse.Namespace, title: str, preface: str = ""
                          ) -> dict[str, Any]:

    from steer_away.evaluation.ppa import compute_ppa
    from steer_away.evaluation.report import write_report
    from steer_away.evaluation.sweep import EvalContext, run_sweep

    ray_address = None
    if getattr(args, "ray", None):
        ray_address = "local" if args.ray == "local" else args.ray
    result = run_sweep(config, ray_address=ray_address)
    ppa = {}
    if not getattr(args, "no_ppa", False):
        ctx = EvalContext(config)
        ppa = compute_ppa(ctx, max_pairs=config.ppa_pairs)
    out = Path(args.report or config.run_dir / "report")
    notes = preface + "\n" + (f"Model `{config.model or 'embedded SmolLM2-135M-Instruct'}`, scorer `{config.scorer}`, "
                              f"data `{config.prism or 'standin'}`. Sweep took {result.seconds:.0f}s "
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

    from steer_away.evaluation.report import write_report

    out = Path(args.out or Path(args.store).parent / "report")
    tables = write_report(args.store, out, fingerprint=args.fingerprint)
    _print_main_table(tables["main"], f"report of {args.store}")
    console.print(f"report: {out / 'report.md'}")
    return 0


DEMO_PREFACE = (
    "**What this run does.** It answers {prompts} held-out opening prompts for {users} users of our synthetic "
    "PRISM stand-in ({per} users per sensitivity group, chosen for having the most rated turns) with the embedded "
    "SmolLM2-135M-Instruct, unsteered and under each steering method, scores every answer with the offline "
    "Jigsaw classifier, and measures how far each answer's toxicity is from the toxicity that user preferred "
    "in their own choices. Intervals are 95 % bootstrap intervals clustered by user and by prompt.\n\n"
    "**What it does not show.** These are not PRISM results: the users, their choices and the answers they "
    "rated are synthetic (written to follow PRISM's published statistics), so preferred toxicity is low for "
    "almost everyone and differences between users are small, as on PRISM. A 135M model is not Llama-3.1-8B, "
    "the scorer is not Perspective, and {questions} MMLU-format questions can only detect changes of "
    "{detectable} points or more. Nothing here "
    "says users would prefer the steered answers; read the answers at the end before trusting any number.\n")


def _demo_preface(config: SweepConfig) -> str:
    from steer_away.evaluation.metrics import smallest_detectable_change
    from steer_away.evaluation.mmlu import load_mmlu

    questions = len(load_mmlu(None, limit=config.mmlu_limit)) if config.mmlu == "fixture" else config.mmlu_limit or 0
    return DEMO_PREFACE.format(users=3 * config.users_per_sensitivity, prompts=4 * config.prompts_per_category,
                               per=config.users_per_sensitivity, questions=questions,
                               detectable=f"{100 * smallest_detectable_change(questions):.0f}" if questions else "-")


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from steer_away.evaluation.sweep import SweepConfig
    from steer_away.resources import demo_sweep_path

    start = time.perf_counter()
    config = SweepConfig.from_toml(demo_sweep_path())
    config.out = args.out
    if args.quick:
        config.users_per_sensitivity, config.prompts_per_category, config.max_new_tokens = 1, 1, 24
        config.mmlu_limit, config.n_pairs = 8, 48
    console.print(f"[bold]steer-away demo[/bold]: embedded SmolLM2-135M-Instruct, synthetic PRISM stand-in, "
                  f"offline toxicity scorer → {config.out}")
    _run_sweep_and_report(config, args, "steer-away demo: steering toward each user's preferred toxicity",
                          preface=_demo_preface(config))
    console.print(f"demo finished in {time.perf_counter() - start:.0f}s")
    return 0


def _scheduler_names() -> list[str]:
    from steer_away.server.engine import SCHEDULERS

    return list(SCHEDULERS)


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from steer_away.server import ServerSettings, serve

    lm = _load(args)
    settings = ServerSettings(model_name=args.name, default_method=args.method,
                              api_key=args.api_key or os.environ.get("STEER_AWAY_API_KEY"), max_batch=args.max_batch,
                              max_queue=args.max_queue, max_tokens_limit=args.max_tokens_limit,
                              scheduler=args.scheduler)
    console.print(f"serving {lm.model_id} as '{settings.model_name}' on http://{args.host}:{args.port} "
                  f"(auth: {'on' if settings.api_key else 'off'})")
    serve(lm, args.host, args.port, profiles=args.profiles, vectors=args.vectors, categories=args.categories,
          settings=settings)
    return 0


def _add_steering_args(parser: argparse.ArgumentParser) -> None:
    from steer_away.steering.registry import get_method, method_names

    names = method_names()
    parser.add_argument("--method", choices=names, default=None, metavar="METHOD",
                        help="; ".join(f"{n}: {get_method(n).summary}" for n in names)
                        + " (default: the first vector method when --vector is given, else the baseline)")
    parser.add_argument("--vector", "--vectors", dest="vector", default=None,
                        help="CAA: a vector store folder, a bank folder, a .safetensors vector or a .gguf control vector")
    parser.add_argument("--allow-other-model", action="store_true",
                        help="use vectors extracted under another model id (hidden size and depth are still checked)")
    parser.add_argument("--profiles", default=None, help="profiles JSON (users' sensitivity, for logit steering)")
    parser.add_argument("--categories", default=None, help="steering-category TOML (default: shipped)")
    group = parser.add_argument_group("method arguments (each method takes some of these; see --method)")
    for field, text in _method_fields().items():
        group.add_argument(f"--{field.replace('_', '-')}", dest=f"arg_{field}", default=None, help=text)


def _method_names() -> list[str]:
    from steer_away.steering.registry import method_names

    return method_names()


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
    _add_steering_args(gen)
    gen.set_defaults(func=cmd_generate)


    cal = sub.add_parser("calibrate", help="find the α range where a method changes TOXICITY before text breaks")
    _add_model_args(cal)
    _add_steering_args(cal)
    cal.add_argument("--alphas", default="0.25,0.5,1,2,4,8", help="comma-separated strengths (α = 0 is added)")
    cal.add_argument("--user", default=None, help="calibrate the steering of this user (personal methods)")
    cal.add_argument("--category", default=None, help="logit steering: the category to calibrate")
    cal.add_argument("--direction", choices=["lower", "higher"], default="lower",
                     help="which way TOXICITY should move (default: lower)")
    cal.add_argument("--prompts", default=None, help="a text file, one prompt per line (default: held-out "
                                                     "opening prompts of --prism)")
    cal.add_argument("--prism", default=None, help=PRISM_HELP)
    cal.add_argument("--n-prompts", type=int, default=12)
    cal.add_argument("--max-tokens", type=int, default=40)
    cal.add_argument("--batch-size", type=int, default=8)
    cal.add_argument("--max-collapsed", type=float, default=0.1, help="largest usable share of collapsed answers")
    cal.add_argument("--max-distinct-drop", type=float, default=0.1, help="largest usable drop in distinct-2")
    cal.add_argument("--max-ppl-ratio", type=float, default=2.0,
                     help="largest usable median perplexity, as a multiple of the unsteered answers'")
    cal.add_argument("--scorer", default="jigsaw-bilstm")
    cal.add_argument("--score-cache", default=None)
    cal.add_argument("--out", default="calibration", help="folder for calibration.json and calibration.png")
    cal.set_defaults(func=cmd_calibrate)

    cats = sub.add_parser("categories", help="logit-steering categories").add_subparsers(dest="action", required=True)
    check = cats.add_parser("check", help="TOXICITY of each category's base, expert and anti-expert answers")
    _add_model_args(check)
    check.add_argument("--categories", default=None, help="steering-category TOML (default: shipped)")
    check.add_argument("--category", action="append", default=None, help="only this category (repeatable)")
    check.add_argument("--prompts", default=None, help="a text file, one prompt per line (default: held-out "
                                                       "opening prompts of --prism)")
    check.add_argument("--prism", default=None, help=PRISM_HELP)
    check.add_argument("--n-prompts", type=int, default=12)
    check.add_argument("--max-tokens", type=int, default=40)
    check.add_argument("--batch-size", type=int, default=8)
    check.add_argument("--scorer", default="jigsaw-bilstm")
    check.add_argument("--score-cache", default=None)
    check.set_defaults(func=cmd_categories_check)

    sub.add_parser("methods", help="list the steering methods and their arguments").set_defaults(func=cmd_methods)

    vec = sub.add_parser("vectors", help="steering vectors").add_subparsers(dest="action", required=True)
    ext = vec.add_parser("extract", help="population CAA vector from PRISM preference pairs")
    _add_model_args(ext)
    ext.add_argument("--prism", default=None, help=PRISM_HELP)
    ext.add_argument("--n-pairs", type=int, default=200)
    ext.add_argument("--layers", default="seed", help="'seed' = the CAA study's 16-22 of 32, mapped by depth")
    ext.add_argument("--position", choices=["last", "mean"], default="last")
    ext.add_argument("--min-margin", type=float, default=0.0)
    ext.add_argument("--holdout", type=float, default=0.3, help="share of opening prompts kept out for evaluation")
    ext.add_argument("--batch-size", type=int, default=8)
    ext.add_argument("--seed", type=int, default=0)
    ext.add_argument("--out", default="vectors", help="vector store folder")
    ext.set_defaults(func=cmd_vectors_extract)
    comp = vec.add_parser("compose", help="per-user vectors (dislike-weighted or Bradley–Terry basis)")
    comp.add_argument("--activations", default="vectors/pair_activations.safetensors")
    comp.add_argument("--profiles", required=True)
    comp.add_argument("--mode", choices=list(COMPOSE_MODES), default="dislike")
    comp.add_argument("--k", type=int, default=8, help="BT basis size")
    comp.add_argument("--l2", type=float, default=1.0, help="BT regularisation")
    comp.add_argument("--shrinkage", type=float, default=10.0, help="pseudo-pairs pulling users to the population")
    comp.add_argument("--scorer", default="jigsaw-bilstm")
    comp.add_argument("--score-cache", default=None)
    comp.add_argument("--out", default=None, help="bank folder (default: next to the activations, named by mode)")
    comp.add_argument("--no-card", action="store_true", help="skip the vector card (it loads the model)")
    _add_model_args(comp)
    comp.set_defaults(func=cmd_vectors_compose)
    exp = vec.add_parser("export-gguf", help="write a vector as a llama.cpp control vector")
    exp.add_argument("--vector", required=True, help="a .safetensors vector")
    exp.add_argument("--out", required=True, help="the .gguf file to write")
    exp.add_argument("--layers", default=None, help="only these layers ('15-20'); llama.cpp cannot steer layer 0")
    exp.add_argument("--scale", type=float, default=1.0, help="multiply the vector first (llama.cpp's strength)")
    exp.add_argument("--model-hint", default="llama", help="architecture name llama.cpp shows (default: llama)")
    exp.set_defaults(func=cmd_vectors_export_gguf)
    imp = vec.add_parser("import-gguf", help="read a llama.cpp / repeng control vector for this model")
    _add_model_args(imp)
    imp.add_argument("--gguf", required=True, help="the control vector (.gguf)")
    imp.add_argument("--out", required=True, help="the .safetensors vector to write")
    imp.set_defaults(func=cmd_vectors_import_gguf)

    srv = sub.add_parser("serve", help="OpenAI-compatible chat server with per-user steering")
    _add_model_args(srv)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--profiles", default=None, help="profiles JSON (users' sensitivity for logit steering)")
    srv.add_argument("--vectors", default=None, help="vector store or bank folder, or one vector file (CAA)")
    srv.add_argument("--categories", default=None, help="steering-category TOML (default: shipped)")
    srv.add_argument("--method", choices=_method_names(), default=None, metavar="METHOD",
                     help="steering when a request names none (default: a per-user vector method when "
                          "--vectors is given, else the baseline)")
    srv.add_argument("--name", default="steer-away", help="model name the API reports")
    srv.add_argument("--api-key", default=None, help="require this bearer token (or set STEER_AWAY_API_KEY)")
    srv.add_argument("--max-batch", type=int, default=8, help="requests decoded together at most")
    srv.add_argument("--scheduler", choices=_scheduler_names(), default="continuous",
                     help="continuous: a request joins the running batch at the next step; static: only once "
                          "the running batch has ended")
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

    data = sub.add_parser("data", help="PRISM-shaped data").add_subparsers(dest="action", required=True)
    stats = data.add_parser("stats", help="how PRISM-like the data is: shape, ratings, toxicity ties, preferences")
    stats.add_argument("--prism", default=None, help=PRISM_HELP)
    stats.add_argument("--scorer", default="jigsaw-bilstm")
    stats.add_argument("--score-cache", default=None)
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    stats.set_defaults(func=cmd_data_stats)
    standin = data.add_parser("standin", help="write our synthetic PRISM stand-in to a folder")
    standin.add_argument("--out", required=True)
    standin.add_argument("--users", type=int, default=300)
    standin.add_argument("--seed", type=int, default=0)
    standin.set_defaults(func=cmd_data_standin)

    prof = sub.add_parser("profiles", help="user toxicity profiles").add_subparsers(dest="action", required=True)
    build = prof.add_parser("build", help="build profiles from PRISM choices and toxicity scores")
    build.add_argument("--prism", default=None, help=PRISM_HELP)
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
