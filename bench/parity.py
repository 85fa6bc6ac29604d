"""Are answers the same token for token? Every method alone, batched, and joining a running batch.

Refactors of the decode path must not change a single greedy token. This script answers a fixed set
of (prompt, user) rows with every registered method at its default arguments three ways:

- alone: one `generate` call per row;
- batched: all rows in one `generate` call;
- joining: one decode loop where the rows join in three waves, two steps apart (mid-flight);

plus seeded sampling (temperature 0.8, one seed per row) alone and batched. It writes every token
id to a JSON file and compares the three ways within the run; with `--compare OLD.json` it also
compares every token with a run of another version of the code (the proof a refactor is one).

    python bench/parity.py --vectors VECTOR_STORE --profiles profiles.json --out after.json --compare before.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, base_parser, machine_line, print_table
from steer_away.decoding import DecodeEngine, DecodeRequest, GenerationConfig
from steer_away.generation import generate
from steer_away.models import load_model
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.registry import build_method, method_names

WAVES = 3  # rows join the running loop in this many groups
WAVE_GAP = 2  # decoding steps between two waves


def rows_for(users: list[str], prompts: list[str]) -> list[tuple[str, str]]:
    """Each prompt with a different user (round robin), so per-user methods mix users in a batch."""
    return [(prompt, users[i % len(users)]) for i, prompt in enumerate(prompts)]


def joining(lm: object, rows: list[tuple[str, str]], method: object, config: GenerationConfig) -> list[list[int]]:
    loop = DecodeEngine(lm)  # type: ignore[arg-type]
    requests = [DecodeRequest(prompt, method, RowSteering(user), config) for prompt, user in rows]  # type: ignore[arg-type]
    size = -(-len(requests) // WAVES)
    for wave in range(WAVES):
        for request in requests[wave * size:(wave + 1) * size]:
            loop.add(request)
        for _ in range(WAVE_GAP):
            if not loop.idle:
                loop.step()
    loop.run()
    return [list(r.tokens) for r in requests]


def agreement(runs: dict[str, list[list[int]]], a: str, b: str) -> str:
    return f"{sum(x == y for x, y in zip(runs[a], runs[b]))}/{len(runs[a])}"


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(tokens=32)
    parser.add_argument("--vectors", required=True, help="vector store (vectors extract / compose)")
    parser.add_argument("--profiles", required=True)
    parser.add_argument("--users", default="", help="comma-separated user ids (default: the first 3 with a dislike "
                                                    "vector, plus one unknown user)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--methods", default="", help="comma-separated (default: every registered method)")
    parser.add_argument("--out", required=True, help="JSON file for every token id")
    parser.add_argument("--compare", default=None, help="a JSON file written by an earlier run")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    lm = load_model(args.model, device=args.device)
    print(machine_line(lm))
    users = args.users.split(",") if args.users else \
        [*sorted(p.stem for p in (Path(args.vectors) / "dislike" / "users").glob("*.safetensors"))[:3], "nobody"]
    rows = rows_for(users, PROMPTS[:args.prompts])
    resources = SteeringResources(lm, vectors=args.vectors, profiles=args.profiles)
    names = args.methods.split(",") if args.methods else method_names()
    greedy = GenerationConfig(max_new_tokens=args.tokens)
    sampled = GenerationConfig(max_new_tokens=args.tokens, do_sample=True, temperature=0.8)
    seeds = list(range(len(rows)))
    result: dict[str, dict[str, list[list[int]]]] = {}
    table = []
    for name in names:
        method = build_method(name, None, resources)
        steering = [RowSteering(user) for _, user in rows]
        prompts = [prompt for prompt, _ in rows]
        runs = {
            "alone": [generate(lm, [p], method, [s], greedy)[0].token_ids for p, s in zip(prompts, steering)],
            "batched": [g.token_ids for g in generate(lm, prompts, method, steering, greedy)],
            "joining": joining(lm, rows, method, greedy),
            "sampled alone": [generate(lm, [p], method, [s], sampled, seeds=[seed])[0].token_ids
                              for p, s, seed in zip(prompts, steering, seeds)],
            "sampled batched": [g.token_ids for g in generate(lm, prompts, method, steering, sampled, seeds=seeds)],
        }
        result[name] = runs
        table.append([name, agreement(runs, "alone", "batched"), agreement(runs, "alone", "joining"),
                      agreement(runs, "sampled alone", "sampled batched")])
        print(f"{name}: done", flush=True)
    print_table(f"within this run ({len(rows)} rows, {args.tokens} tokens; users {', '.join(users)})",
                ["method", "batched = alone", "joining = alone", "sampled batched = alone"], table)
    Path(args.out).write_text(json.dumps({"rows": rows, "tokens": args.tokens, "answers": result}, indent=0))
    if args.compare:
        old = json.loads(Path(args.compare).read_text())["answers"]
        rows_out = []
        for name, runs in result.items():
            if name not in old:
                rows_out.append([name, "(not in the earlier run)", "", ""])
                continue
            counts = [f"{sum(a == b for a, b in zip(runs[mode], old[name][mode]))}/{len(runs[mode])}" for mode in runs]
            rows_out.append([name, *counts])
        print_table(f"identical to {args.compare}", ["method", *next(iter(result.values()))], rows_out)


if __name__ == "__main__":
    main()
