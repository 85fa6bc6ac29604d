"""Decode speed: unsteered vs CAA vs per-user CAA vs EADS / ACD vs reranking, classifier guidance and
profile prompting, and the memory-bandwidth bound.

Every ratio comes from one run on one machine: the same model, prompts and token counts, timed
round-robin after warm-up, medians of repeats. Usage:
    python bench/decode.py                      # embedded SmolLM2 on the CPU
    python bench/decode.py --device cuda --model meta-llama/Llama-3.1-8B-Instruct
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, base_parser, copy_bandwidth, interleaved_medians, machine_line, print_table, weight_bytes
from steer_away import internals
from steer_away.generation import GenerationConfig, generate
from steer_away.models import load_model
from steer_away.scoring.jigsaw import JigsawBiLSTMScorer
from steer_away.steering.activation import ActivationSteering
from steer_away.steering.base import RowSteering, Unsteered
from steer_away.steering.guided import ClassifierGuided
from steer_away.steering.layers import default_layers
from steer_away.steering.logits import ACD, EADS
from steer_away.steering.prompting import ProfilePrompt
from steer_away.steering.rerank import Rerank
from steer_away.steering.targets import ToxicityTargets
from steer_away.steering.vectors import SteeringVector


def random_vector(lm: object, seed: int, layers: list[int]) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    hidden = internals.hidden_size(lm.model)
    return SteeringVector({l: torch.randn(hidden, generator=gen) for l in layers}, lm.model_id, hidden,
                          internals.num_layers(lm.model))


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    lm = load_model(args.model, device=args.device)
    device = lm.device
    layers = default_layers(lm.model)
    cfg = GenerationConfig(max_new_tokens=args.tokens, stop_on_eos=False)
    population = random_vector(lm, 0, layers)
    users = {f"u{i}": random_vector(lm, i + 1, layers) for i in range(8)}
    caa = ActivationSteering(population, alpha=0.5)
    per_user = ActivationSteering(users, alpha=0.5, default=population)
    eads, acd = EADS(), ACD()
    # The offline scorer itself, uncached, so every candidate text is really scored (as on a first run).
    scorer = JigsawBiLSTMScorer()
    targets = ToxicityTargets({}, scorer, "bench")
    rerank = Rerank(Unsteered(), scorer, targets)  # 4 samples at T 0.7, the defaults
    guided = ClassifierGuided(scorer, targets)  # top 10 judged per step, λ 20
    prompted = ProfilePrompt()  # the default category's prompt and example exchanges
    print(machine_line(lm))
    print(f"{args.tokens} new tokens per row, steered layers {layers[0]}-{layers[-1]}, "
          f"median of {args.repeats} round-robin repeats after {args.warmup} warm-up")

    rows = []
    results = {}
    for batch in (1, 8):
        prompts = PROMPTS[:batch]
        mixed_rows = [RowSteering(f"u{i}") for i in range(batch)]
        fns = {
            "unsteered": lambda p=prompts: generate(lm, p, config=cfg),
            "caa": lambda p=prompts: generate(lm, p, method=caa, config=cfg),
            "caa per-user": lambda p=prompts, r=mixed_rows: generate(lm, p, method=per_user, rows=r, config=cfg),
            "eads": lambda p=prompts: generate(lm, p, method=eads, config=cfg),
            "acd": lambda p=prompts: generate(lm, p, method=acd, config=cfg),
            "rerank (4 samples)": lambda p=prompts: generate(lm, p, method=rerank, config=cfg),
            "guided (top 10)": lambda p=prompts: generate(lm, p, method=guided, config=cfg),
            "profile-prompt": lambda p=prompts: generate(lm, p, method=prompted, config=cfg),
        }
        times = interleaved_medians(fns, device, args.repeats, args.warmup)
        base = times["unsteered"]
        for name, seconds in times.items():
            tps = batch * args.tokens / seconds
            results[(name, batch)] = tps
            rows.append([name, str(batch), f"{seconds * 1000 / args.tokens:.1f}", f"{tps:.1f}",
                         f"{base / seconds:.3f}", f"{seconds / base:.3f}"])
    print_table("Greedy decoding (whole generate call: prefill + decode)",
                ["method", "batch", "ms/step", "tokens/s", "speed ÷ unsteered", "time ÷ unsteered"], rows)

    # Prefill alone (one new token): EADS / ACD branches carry their category's system prompt and
    # example exchanges, so their contexts are several times longer than the user's prompt.
    one = GenerationConfig(max_new_tokens=1, stop_on_eos=False)
    prefill_rows = []
    for batch in (1, 8):
        prompts = PROMPTS[:batch]
        fns = {"unsteered": lambda p=prompts: generate(lm, p, config=one),
               "eads": lambda p=prompts: generate(lm, p, method=eads, config=one),
               "acd": lambda p=prompts: generate(lm, p, method=acd, config=one)}
        times = interleaved_medians(fns, device, args.repeats, args.warmup)
        for name, seconds in times.items():
            prefill_rows.append([name, str(batch), f"{seconds * 1000:.1f}", f"{seconds / times['unsteered']:.2f}"])
    print_table("Prefill (one new token)", ["method", "batch", "ms", "time ÷ unsteered"], prefill_rows)

    bandwidth = copy_bandwidth(device)
    wbytes = weight_bytes(lm.model)
    bound = bandwidth / wbytes
    print_table("Batch-1 decode against the memory-bandwidth bound (every weight read once per token)",
                ["figure", "value"],
                [["weight bytes", f"{wbytes / 2**20:.0f} MiB"], ["copy bandwidth", f"{bandwidth / 1e9:.1f} GB/s"],
                 ["bound (tokens/s)", f"{bound:.1f}"],
                 ["unsteered / bound", f"{results[('unsteered', 1)] / bound:.2f}"],
                 ["caa / bound", f"{results[('caa', 1)] / bound:.2f}"]])
    print("\nGoals: caa ≥ 0.97× unsteered (batch 1, 8); per-user caa batch 8 ≥ 0.95×; eads/acd time ≤ 1.8× on CPU. "
          "Rerank pays for its samples (about N× at batch 1, less where they batch); guided for k scorer texts "
          "per row and step; profile-prompt for its longer context.")


if __name__ == "__main__":
    main()
