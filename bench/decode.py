"""Decode speed of every kind of method against the unsteered model and against its floor.

A method that runs k rows per answer cannot be faster than the unsteered model on the same k·b rows;
that floor is measured beside it, in the same process:
- EADS / ACD (3 / 2 rows): the unsteered model decoding the method's own branch rows (the same
  contexts, the same shared prefixes), each step's token taken from the base row, nothing combined;
- rerank (4 samples): four sampled unsteered answers per prompt, plus the scorer judging them.
Every row decodes the same number of tokens (no stop at EOS). Figures are medians of repeats timed
round-robin after a short warm-up (so drift in machine load hits every variant alike).

With `--before REV`, the same measurements run with that revision's code too (a git worktree, this
script with its `src` on PYTHONPATH), the two versions alternating in fresh processes, and one table
gives both: before ÷ after is measured on one machine in one run.

    python bench/decode.py                                   # embedded SmolLM2 on the CPU
    python bench/decode.py --before HEAD~3 --rounds 2        # this code against an older one
    python bench/decode.py --device cuda --model meta-llama/Llama-3.1-8B-Instruct --batches 1,16,64
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, base_parser, copy_bandwidth, machine_line, print_table, sync, weight_bytes

FLOORS = {"eads": "eads rows, unsteered", "acd": "acd rows, unsteered", "rerank (4)": "4 samples + scoring"}
ROWS = {"eads": 3, "acd": 2, "rerank (4)": 4}


def measure(args: object) -> dict[str, object]:
    """Every method's seconds per generate call at every batch size (lists of repeats), in this process."""
    from steer_away import internals
    from steer_away.generation import GenerationConfig, generate
    from steer_away.models import load_model
    from steer_away.scoring.jigsaw import JigsawBiLSTMScorer
    from steer_away.steering.framework.method import PreparedBatch, RowSteering, SteeringMethod, Unsteered
    from steer_away.steering.framework.targets import ToxicityTargets
    from steer_away.steering.methods.activation import ActivationSteering
    from steer_away.steering.methods.guided import ClassifierGuided
    from steer_away.steering.methods.logits import ACD, EADS
    from steer_away.steering.methods.prompting import ProfilePrompt
    from steer_away.steering.methods.rerank import Rerank
    from steer_away.steering.vectors.layers import default_layers
    from steer_away.steering.vectors.vector import SteeringVector

    class BranchRows(SteeringMethod):
        """A multi-branch method's floor: its branch rows (contexts and shared prefixes) decoded by the
        unsteered model, each token the base row's own pick, nothing combined."""

        name = "floor"

        def __init__(self, method: SteeringMethod) -> None:
            self.method = method

        def prepare(self, lm: object, conversations: object, rows: object) -> PreparedBatch:
            inner = self.method.prepare(lm, conversations, rows)  # type: ignore[arg-type]
            return PreparedBatch(inner.branches, inner.prefixes)

    torch.set_grad_enabled(False)
    lm = load_model(args.model, device=args.device)  # type: ignore[attr-defined]
    layers = default_layers(lm.model)
    hidden, depth = internals.hidden_size(lm.model), internals.num_layers(lm.model)

    def vector(seed: int) -> SteeringVector:
        gen = torch.Generator().manual_seed(seed)
        return SteeringVector({l: torch.randn(hidden, generator=gen) for l in layers}, lm.model_id, hidden, depth)

    tokens = args.tokens  # type: ignore[attr-defined]
    config = GenerationConfig(max_new_tokens=tokens, stop_on_eos=False)
    sampled = GenerationConfig(max_new_tokens=tokens, stop_on_eos=False, do_sample=True, temperature=0.7)
    short = GenerationConfig(max_new_tokens=4, stop_on_eos=False)
    population = vector(0)
    caa = ActivationSteering(population, alpha=0.5)
    batches = [int(b) for b in args.batches.split(",")]  # type: ignore[attr-defined]
    per_user = ActivationSteering({f"u{i}": vector(i + 1) for i in range(max(batches))}, alpha=0.5, default=population)
    eads, acd = EADS(), ACD()
    scorer = JigsawBiLSTMScorer()  # uncached: every candidate text is really scored, as on a first run
    targets = ToxicityTargets({}, scorer, "bench")
    rerank = Rerank(Unsteered(), scorer, targets)  # 4 samples at T 0.7, the defaults
    guided = ClassifierGuided(scorer, targets)  # top 10 judged per step, λ 20
    prompted = ProfilePrompt()
    wanted = set(args.methods.split(",")) if args.methods else None  # type: ignore[attr-defined]

    samples: dict[str, dict[str, list[float]]] = {}
    for batch in batches:
        prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" ({i // len(PROMPTS)})")
                   for i in range(batch)]
        users = [RowSteering(f"u{i}") for i in range(batch)]

        def rerank_floor(p: list[str] = prompts) -> None:
            answers = generate(lm, [x for x in p for _ in range(4)], config=sampled, seeds=list(range(4 * len(p))))
            scorer.score([a.text for a in answers])

        fns: dict[str, Callable[[GenerationConfig], object]] = {
            "unsteered": lambda c, p=prompts: generate(lm, p, config=c),
            "caa": lambda c, p=prompts: generate(lm, p, method=caa, config=c),
            "caa per-user": lambda c, p=prompts, r=users: generate(lm, p, method=per_user, rows=r, config=c),
            "eads": lambda c, p=prompts: generate(lm, p, method=eads, config=c),
            FLOORS["eads"]: lambda c, p=prompts: generate(lm, p, method=BranchRows(eads), config=c),
            "acd": lambda c, p=prompts: generate(lm, p, method=acd, config=c),
            FLOORS["acd"]: lambda c, p=prompts: generate(lm, p, method=BranchRows(acd), config=c),
            "rerank (4)": lambda c, p=prompts: generate(lm, p, method=rerank, config=c),
            FLOORS["rerank (4)"]: lambda c, p=prompts: rerank_floor(p) if c is config else generate(lm, p, config=c),
            "guided (top 10)": lambda c, p=prompts: generate(lm, p, method=guided, config=c),
            "profile-prompt": lambda c, p=prompts: generate(lm, p, method=prompted, config=c),
        }
        if wanted is not None:
            fns = {name: fn for name, fn in fns.items() if name in wanted or name.split(" ")[0] in wanted}
        for fn in fns.values():  # warm-up: first calls, buffers, the fast decode step's weight copies
            fn(short)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.repeats):  # type: ignore[attr-defined]
            for name, fn in fns.items():
                sync(lm.device)
                start = time.perf_counter()
                fn(config)
                sync(lm.device)
                times[name].append(time.perf_counter() - start)
        for name, values in times.items():
            samples.setdefault(name, {})[str(batch)] = values
        print(f"batch {batch}: measured", file=sys.stderr, flush=True)
    return {"machine": machine_line(lm), "samples": samples, "tokens": tokens,
            "bandwidth": copy_bandwidth(lm.device), "weights": weight_bytes(lm.model)}


def merged(runs: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for name, per_batch in run["samples"].items():  # type: ignore[attr-defined]
            for batch, values in per_batch.items():
                out.setdefault(name, {}).setdefault(batch, []).extend(values)
    return {name: {b: statistics.median(v) for b, v in per.items()} for name, per in out.items()}


def report(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]] | None, tokens: int) -> None:
    batches = sorted({b for per in after.values() for b in per}, key=int)
    for batch in batches:
        base = after["unsteered"][batch]
        old_base = before["unsteered"][batch] if before else None
        header = ["method", "rows", "s", "tokens/s", "÷ unsteered", "÷ floor"]
        if before:
            header += ["s before", "÷ unsteered before", "time ÷ before"]
        rows = []
        for name, per in after.items():
            if batch not in per or name in FLOORS.values():
                continue
            seconds = per[batch]
            floor = after.get(FLOORS.get(name, ""), {}).get(batch)
            row = [name, str(ROWS.get(name, 1)), f"{seconds:.2f}", f"{int(batch) * tokens / seconds:.1f}",
                   f"{seconds / base:.2f}", f"{seconds / floor:.2f} (floor {floor / base:.2f})" if floor else "-"]
            if before:
                old = before.get(name, {}).get(batch)
                row += [f"{old:.2f}" if old else "-", f"{old / old_base:.2f}" if old and old_base else "-",
                        f"{seconds / old:.3f}" if old else "-"]
            rows.append(row)
        print_table(f"batch {batch}, {tokens} new tokens per row (whole generate call: prefill + decode)", header, rows)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(tokens=48, repeats=3)
    parser.add_argument("--batches", default="1,8,16,64")
    parser.add_argument("--methods", default="", help="comma-separated names from the table (default: all)")
    parser.add_argument("--before", default=None, help="a git revision to measure against, alternating processes")
    parser.add_argument("--rounds", type=int, default=2, help="with --before: processes per version, alternated")
    parser.add_argument("--json", default=None, help="write the raw seconds here")
    args = parser.parse_args()
    if args.before is None:
        run = measure(args)
        print(run["machine"])
        report(merged([run]), None, args.tokens)
        print(f"\nbatch-1 bound (weights ÷ copy bandwidth): {run['bandwidth'] / run['weights']:.1f} tokens/s")
        if args.json:
            Path(args.json).write_text(json.dumps(run))
        return
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as scratch:
        old = Path(scratch) / "before"
        subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(old), args.before], check=True,
                       stdout=subprocess.DEVNULL)
        try:
            runs: dict[str, list[dict[str, object]]] = {"before": [], "after": []}
            passed = [a for a in sys.argv[1:] if a not in ("--before", args.before)]
            for round_ in range(args.rounds):
                for version, src in (("before", old / "src"), ("after", here / "src")):
                    out = Path(scratch) / f"{version}-{round_}.json"
                    env = {**os.environ, "PYTHONPATH": str(src)}
                    subprocess.run([sys.executable, __file__, *passed, "--json", str(out)], check=True, env=env,
                                   stdout=subprocess.DEVNULL)
                    runs[version].append(json.loads(out.read_text()))
                    print(f"round {round_ + 1}: {version} measured", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(old)], check=False)
    print(runs["after"][0]["machine"])
    print(f"before: {args.before}; after: this tree; {args.rounds} alternated processes each, "
          f"{args.repeats} round-robin repeats per process")
    report(merged(runs["after"]), merged(runs["before"]), args.tokens)
    if args.json:
        Path(args.json).write_text(json.dumps(runs))


if __name__ == "__main__":
    main()
