"""Throughput at Llama-3.1-8B's shape on a GPU: prefill and decode tokens/s per method and batch size,
as ratios to unsteered measured in the same run, against the published per-request steering figures,
transformers' own `generate`, and the weight-bandwidth bound; peak memory; our loop's host time per step.

The model is Llama-3.1-8B's configuration with random bf16 weights built on the device (nothing to
download; the compute is the real one), or `--model` when its weights are at hand. Every row decodes
the same number of tokens (no stopping at EOS). Prefill is timed as a one-token call; decode as the
difference between a full call and the one-token call. `--tiny` runs the same code on the CPU in seconds.
    python bench/gpu.py                 # on a CUDA machine
    python bench/gpu.py --tiny          # CPU smoke run (CI)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    bench_model,
    copy_bandwidth,
    interleaved_medians,
    machine_line,
    print_table,
    random_vector,
    sync,
    weight_bytes,
)
from steer_away import internals
from steer_away.decoding import DecodeLoop, DecodeRequest
from steer_away.decoding import runner as decode_runner
from steer_away.generation import GenerationConfig, generate
from steer_away.models import LanguageModel
from steer_away.steering.framework.method import RowSteering, SteeringMethod
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.methods.logits import ACD, EADS
from steer_away.steering.vectors.layers import default_layers

# Published figures for per-request steering in one batch (ratio of unsteered throughput).
ANCHORS = [("EasySteer (vLLM fork), 1 config in a 256-request batch", 0.76),
           ("EasySteer, 8 configs in 256", 0.65), ("EasySteer, 32 configs in 256", 0.52),
           ("vLLM steering fork, batch 1, every request steered (+9.7 % latency)", 1 / 1.097),
           ("vLLM steering fork, batch 16 (+74 %)", 1 / 1.74), ("vLLM steering fork, batch 32 (+124 %)", 1 / 2.24)]
BRANCHED = ("eads", "acd")  # methods that run extra branches behind long prefixes
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "thank", "you", "for", "the", "kind",
         "and", "careful", "answer")


def prompt(index: int, words: int) -> str:
    """A distinct prompt of about `words` words (no two rows share a prefix by accident)."""
    return " ".join([str(index)] + [WORDS[(index + k) % len(WORDS)] for k in range(words - 1)])


def hf_generate(lm: LanguageModel, prompts: list[str], tokens: int) -> Callable[[], object]:
    """transformers' own greedy `generate` on the same model and prompts: what a user would otherwise run."""
    batch = lm.tokenizer([lm.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                           add_generation_prompt=True) for p in prompts],
                         return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)

    def run() -> object:
        with torch.inference_mode():
            return lm.model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                     pad_token_id=lm.tokenizer.pad_token_id)
    return run


def peak_gib(fn: Callable[[], object], device: torch.device) -> str:
    if device.type != "cuda":
        return "-"
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}"


def host_ms_per_step(lm: LanguageModel, prompts: list[str], method: SteeringMethod | None,
                     rows: list[RowSteering] | None, tokens: int) -> tuple[float, float]:
    """(whole step, outside the model's forward) in ms, medians over the decode steps of one generation
    (the prefill step left out): the part outside the forward is the loop's own Python."""
    forward, step = internals.forward_step, DecodeLoop.step
    inside: list[float] = []
    per_step: list[tuple[float, float]] = []

    def timed_forward(*args: object, **kwargs: object) -> torch.Tensor:
        sync(lm.device)
        start = time.perf_counter()
        out = forward(*args, **kwargs)  # type: ignore[arg-type]
        sync(lm.device)
        inside.append(time.perf_counter() - start)
        return out

    def timed_step(loop: DecodeLoop) -> list[DecodeRequest]:
        inside.clear()
        sync(lm.device)
        start = time.perf_counter()
        out = step(loop)
        sync(lm.device)
        wall = time.perf_counter() - start
        per_step.append((wall, wall - sum(inside)))
        return out

    decode_runner.internals.forward_step = timed_forward  # type: ignore[attr-defined]
    DecodeLoop.step = timed_step  # type: ignore[method-assign]
    try:
        generate(lm, prompts, method, rows, GenerationConfig(max_new_tokens=tokens, stop_on_eos=False))
    finally:
        decode_runner.internals.forward_step = forward  # type: ignore[attr-defined]
        DecodeLoop.step = step  # type: ignore[method-assign]
    decode_steps = per_step[1:]  # the first step is everyone's prefill
    return (1000 * statistics.median(w for w, _ in decode_steps), 1000 * statistics.median(o for _, o in decode_steps))


def main() -> None:
    from common import base_parser

    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--tiny", action="store_true", help="the tiny Llama on the CPU, small batches: a smoke run")
    parser.add_argument("--batches", default=None, help="batch sizes (default 1,16,64,256; --tiny: 1,4,16)")
    parser.add_argument("--prompt-words", type=int, default=None, help="words per prompt (default 100; --tiny: 12)")
    parser.add_argument("--methods", default="unsteered,caa,caa-per-user,eads,acd")
    parser.add_argument("--host-batch", type=int, default=256, help="batch size of the host-time measurement")
    parser.add_argument("--branch-max-batch", type=int, default=64,
                        help="largest batch for EADS / ACD (3 or 2 rows per request, each behind ~0.5k tokens of "
                             "system prompt and examples: at 256 requests their KV cache alone nears 64 GB at 8B)")
    args = parser.parse_args()
    if args.tiny:
        batches, words, tokens, device = args.batches or "1,4,16", args.prompt_words or 12, 8, "cpu"
        args.repeats = min(args.repeats, 3)
    else:
        batches, words, tokens, device = args.batches or "1,16,64,256", args.prompt_words or 100, args.tokens, args.device
    if not args.model and not args.shape:
        args.shape = "tiny" if args.tiny else "llama-3.1-8b"
    lm = bench_model(args, device)
    layers = default_layers(lm.model)
    sizes = [int(b) for b in batches.split(",")]
    wanted = args.methods.split(",")
    population = random_vector(lm, 0, layers)
    per_user = ActivationSteering({f"u{i}": random_vector(lm, i + 1, layers) for i in range(max(*sizes, args.host_batch))},
                                  alpha=0.5,
                                  default=population)
    methods: dict[str, tuple[SteeringMethod | None, bool]] = {  # (method, each row its own user)
        "unsteered": (None, False), "caa": (ActivationSteering(population, alpha=0.5), False),
        "caa-per-user": (per_user, True), "eads": (EADS(), False), "acd": (ACD(), False)}
    methods = {name: value for name, value in methods.items() if name in wanted}
    print(machine_line(lm))
    print(f"{words}-word prompts, {tokens} new tokens per row (no EOS stop), steered layers {layers[0]}-{layers[-1]}, "
          f"median of {args.repeats} round-robin repeats after {args.warmup} warm-up")
    rows, ratios, decode_tps = [], {}, {}
    for batch in sizes:
        prompts = [prompt(i, words) for i in range(batch)]
        prompt_tokens = sum(len(lm.tokenizer(p)["input_ids"]) for p in prompts)
        fns: dict[str, Callable[[], object]] = {}
        measured = [name for name in methods if batch <= args.branch_max_batch or name not in BRANCHED]
        for name in measured:
            method, own_user = methods[name]
            steer = [RowSteering(f"u{i}") for i in range(batch)] if own_user else None
            for label, count in (("prefill", 1), ("full", tokens)):
                config = GenerationConfig(max_new_tokens=count, stop_on_eos=False)
                fns[f"{name}/{label}"] = lambda m=method, r=steer, c=config, p=prompts: generate(lm, p, m, r, c)
        fns["hf generate/prefill"], fns["hf generate/full"] = hf_generate(lm, prompts, 1), hf_generate(lm, prompts, tokens)
        times = interleaved_medians(fns, lm.device, args.repeats, args.warmup)
        for name in [*measured, "hf generate"]:
            pre, full = times[f"{name}/prefill"], times[f"{name}/full"]
            decode_tps[(name, batch)] = batch * (tokens - 1) / max(full - pre, 1e-9)
            ratios[(name, batch)] = decode_tps[(name, batch)] / decode_tps[("unsteered", batch)]
            peak = peak_gib(fns[f"{name}/full"], lm.device)
            rows.append([name, str(batch), f"{prompt_tokens / pre:.0f}", f"{decode_tps[(name, batch)]:.1f}",
                         f"{ratios[(name, batch)]:.3f}", f"{full / times['unsteered/full']:.2f}", peak])
        # Each batch's table as soon as it is measured: a run cut short by a time limit keeps what it measured.
        print_table(f"Batch {batch}: prefill and decode (tokens/s; decode = (full − one-token call) / (tokens − 1))",
                    ["method", "batch", "prefill tok/s", "decode tok/s", "decode ÷ unsteered", "time ÷ unsteered",
                     "peak GiB"], rows[-len(measured) - 1:])
        sys.stdout.flush()
    if "caa-per-user" in methods:
        mine = [[f"steer-away per-user CAA, {b} distinct vectors in a batch of {b}", f"{ratios[('caa-per-user', b)]:.3f}"]
                for b in sizes]
        print_table("Every row its own steering: throughput ÷ unsteered", ["setting", "ratio"],
                    mine + [[name, f"{value:.2f} (published)"] for name, value in ANCHORS])
    bound = copy_bandwidth(lm.device) / weight_bytes(lm.model)
    first = sizes[0]
    print_table(f"Decode at batch {first} against the weight-bandwidth bound and transformers' generate",
                ["figure", "value"],
                [["weights", f"{weight_bytes(lm.model) / 2**30:.2f} GiB"], ["bound (tokens/s per row)", f"{bound:.1f}"],
                 ["unsteered ÷ bound", f"{decode_tps[('unsteered', first)] / first / bound:.2f}"],
                 *[[f"unsteered ÷ hf generate, batch {b}", f"{decode_tps[('unsteered', b)] / decode_tps[('hf generate', b)]:.2f}"]
                   for b in sizes]])
    largest = args.host_batch
    prompts = [prompt(i, words) for i in range(largest)]
    host = [[name, *[f"{v:.1f}" for v in host_ms_per_step(lm, prompts, methods[name][0],
                                                           [RowSteering(f"u{i}") for i in range(largest)]
                                                           if methods[name][1] else None, tokens)]]
            for name in methods if name in ("unsteered", "caa-per-user")]
    print_table(f"Host time per decode step at batch {largest} (ms): the loop's own Python is the part outside the forward",
                ["method", "whole step", "outside the model's forward"], host)
    print("\nGoals: per-user CAA ≥ 0.95× unsteered at batch 64 and 256; EADS time ≤ 1.5× at batch 64; "
          "unsteered ≥ 1.0× hf generate.")


if __name__ == "__main__":
    main()
