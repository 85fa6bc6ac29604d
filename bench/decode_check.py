"""Does the CPU fast decode step change any answer? Greedy tokens with it and without it.

The stand-in's held-out opening prompts (what the demo and `categories check` answer) plus the
decode benchmark's prompts, each method at its default strength, batch 1 (one prompt at a time,
where the input-major weight copies are used) and batch 8 (the model's own weights): token ids
from the fast step against the model's own forward (STEER_AWAY_FAST_DECODE=0), per prompt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, base_parser, machine_line, print_table, random_vector
from steer_away.data.prompts import heldout_openings
from steer_away.generation import GenerationConfig, generate
from steer_away.models import load_model
from steer_away.steering.framework.method import SteeringMethod
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.methods.logits import ACD, EADS
from steer_away.steering.vectors.layers import default_layers


def answers(lm: object, prompts: list[str], method: SteeringMethod | None, batch: int, tokens: int,
            fast: bool) -> list[list[int]]:
    os.environ["STEER_AWAY_FAST_DECODE"] = "1" if fast else "0"
    config = GenerationConfig(max_new_tokens=tokens)
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch):
        out += [g.token_ids for g in generate(lm, prompts[start:start + batch], method=method, config=config)]
    return out


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(tokens=64)
    parser.add_argument("--held-out", type=int, default=12, help="stand-in held-out opening prompts")
    parser.add_argument("--methods", default="unsteered,caa,eads,acd")
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    lm = load_model(args.model, device=args.device)
    print(machine_line(lm))
    prompts = heldout_openings(None, args.held_out) + PROMPTS
    layers = default_layers(lm.model)
    methods: dict[str, SteeringMethod | None] = {
        "unsteered": None, "caa": ActivationSteering(random_vector(lm, 1, layers), 0.5),  # random unit-scale vector
        "eads": EADS(), "acd": ACD()}
    methods = {name: methods[name] for name in args.methods.split(",")}
    rows, notes = [], []
    for name, method in methods.items():
        for batch in (int(b) for b in args.batches.split(",")):
            fast = answers(lm, prompts, method, batch, args.tokens, fast=True)
            eager = answers(lm, prompts, method, batch, args.tokens, fast=False)
            same = sum(a == b for a, b in zip(fast, eager))
            rows.append([name, str(batch), f"{same}/{len(prompts)}"])
            for i, (a, b) in enumerate(zip(fast, eager)):
                if a != b:
                    at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                    notes.append([name, str(batch), str(i), str(at)])
    os.environ.pop("STEER_AWAY_FAST_DECODE", None)
    print_table(f"greedy token ids, fast decode step vs the model's own forward ({len(prompts)} prompts, "
                f"{args.tokens} tokens)", ["method", "batch", "identical"], rows)
    if notes:
        print_table("divergences", ["method", "batch", "prompt", "first differing token"], notes)


if __name__ == "__main__":
    main()
