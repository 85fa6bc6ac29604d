"""Our CPU decoding against llama.cpp's on the same model, unsteered and with the same control vector.

One run, round-robin: every repeat times each cell once per prompt, in turn, and the table gives
medians. Cells:

- steer-away f32 (the default, with the fast decode step) and f32 eager (the model's own forward,
  STEER_AWAY_FAST_DECODE=0: how steer-away decoded before), unsteered and with CAA, batch 1;
- llama.cpp (PyPI `llama-cpp-python`, built for this CPU in its own venv by
  scripts/llamacpp_venv.sh; a persistent worker process) on the embedded GGUF de-quantised to F32
  (the weights we decode with) and on the shipped Q4_1 file, unsteered and with the same vector as
  a control vector, batch 1;
- steer-away per-user batch of 8 (eight users' vectors in one batch), which llama.cpp's single
  control vector per context cannot do: tokens/s over all 8 rows.

tokens/s = generated tokens ÷ (prefill + decode) seconds, same work on both sides: one prefill
and tokens - 1 one-token steps, greedy, no early stop. Also: the memory-bandwidth bound (f32
weight bytes ÷ measured read bandwidth) and the CPU's bf16 support.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, base_parser, machine_line, print_table, random_vector, weight_bytes
from llamacpp_interop import f32_gguf, llamacpp_python
from steer_away.chat import render_chat
from steer_away.generation import GenerationConfig, generate
from steer_away.models import embedded_gguf_path, load_model
from steer_away.paths import cache_root
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.vectors.card import respectful_direction
from steer_away.steering.vectors.layers import default_layers
from steer_away.steering.vectors.vector import SteeringVector


def read_bandwidth(megabytes: int = 512) -> float:
    """Bytes per second read by a sum over a buffer far larger than any cache."""
    data = torch.randn(megabytes * 2**20 // 4)
    for _ in range(2):
        data.sum()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - start)
    return data.numel() * 4 / statistics.median(times)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((l for l in text.splitlines() if l.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(tokens=64, repeats=5)
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--llamacpp-python", default=None, help="a python with llama_cpp (default: build one)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    python = llamacpp_python(args.llamacpp_python)
    lm = load_model(None, device="cpu")
    print(machine_line(lm))
    work = cache_root() / "interop"
    work.mkdir(parents=True, exist_ok=True)
    f32_path = f32_gguf(embedded_gguf_path(), work / "SmolLM2-135M-Instruct.F32.gguf")
    layers = default_layers(lm.model)
    vector = SteeringVector(respectful_direction(lm, layers), model_id=lm.model_id,
                            hidden_size=lm.shape.hidden_size, num_layers=lm.shape.num_layers)
    cvec = str(vector.export_gguf(work / "respectful.gguf"))
    caa = ActivationSteering(vector, args.alpha)
    users = {f"u{i}": random_vector(lm, i + 1, layers) * 0.1 for i in range(8)}
    per_user = ActivationSteering(users, args.alpha, default=vector)
    prompts = PROMPTS[:args.prompts]
    token_ids = [lm.tokenizer(render_chat(lm.tokenizer, [{"role": "user", "content": p}]),
                              add_special_tokens=False)["input_ids"] for p in prompts]
    config = GenerationConfig(max_new_tokens=args.tokens, stop_on_eos=False)

    worker = subprocess.Popen([python, str(Path(__file__).parent / "llamacpp_worker.py"), "--serve"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def llama(model: Path, control: str | None, prompt: int) -> float:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(json.dumps({"model": str(model), "threads": args.threads, "cvec": control,
                                       "strength": args.alpha, "prompt": token_ids[prompt],
                                       "tokens": args.tokens}) + "\n")
        worker.stdin.flush()
        return float(json.loads(worker.stdout.readline())["seconds"])

    def ours(method: ActivationSteering | None, prompt: int, fast: bool = True) -> float:
        os.environ["STEER_AWAY_FAST_DECODE"] = "1" if fast else "0"
        start = time.perf_counter()
        generate(lm, [prompts[prompt]], method=method, config=config)
        return time.perf_counter() - start

    def ours_batch(method: ActivationSteering | None, prompt: int) -> float:
        os.environ["STEER_AWAY_FAST_DECODE"] = "1"
        batch = [PROMPTS[(prompt + i) % len(PROMPTS)] for i in range(8)]
        start = time.perf_counter()
        generate(lm, batch, method=method, rows=[RowSteering(f"u{i}") for i in range(8)], config=config)
        return (time.perf_counter() - start) / 8  # seconds per row's tokens: tokens/s over all rows

    cells = {
        ("steer-away f32", "unsteered"): lambda p: ours(None, p),
        ("steer-away f32", "CAA"): lambda p: ours(caa, p),
        ("steer-away f32 eager (before)", "unsteered"): lambda p: ours(None, p, fast=False),
        ("steer-away f32 eager (before)", "CAA"): lambda p: ours(caa, p, fast=False),
        ("llama.cpp F32", "unsteered"): lambda p: llama(f32_path, None, p),
        ("llama.cpp F32", "CAA"): lambda p: llama(f32_path, cvec, p),
        ("llama.cpp Q4_1", "unsteered"): lambda p: llama(embedded_gguf_path(), None, p),
        ("llama.cpp Q4_1", "CAA"): lambda p: llama(embedded_gguf_path(), cvec, p),
        ("steer-away f32, batch 8", "unsteered"): lambda p: ours_batch(None, p),
        ("steer-away f32, batch 8", "per-user CAA"): lambda p: ours_batch(per_user, p),
    }
    for fn in cells.values():  # warm-up: model loads, first-call allocations
        fn(0)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in cells}
    for repeat in range(args.repeats):
        for prompt in range(len(prompts)):
            for key, fn in cells.items():
                times[key].append(fn(prompt))
        print(f"  repeat {repeat + 1}/{args.repeats} done", flush=True)
    worker.stdin.close()  # type: ignore[union-attr]
    worker.wait(timeout=60)
    os.environ.pop("STEER_AWAY_FAST_DECODE", None)

    rate = {key: args.tokens / statistics.median(values) for key, values in times.items()}
    bound = read_bandwidth() / weight_bytes(lm.model)
    ref = rate[("steer-away f32", "unsteered")]
    rows = [[engine, mode, f"{tps:.1f}", f"{tps / ref:.2f}"] for (engine, mode), tps in rate.items()]
    print_table(f"tokens/s, {len(prompts)} prompts × {args.tokens} greedy tokens, {args.threads} threads, "
                f"medians of {args.repeats} round-robin repeats (CAA α {args.alpha:g}, same vector in both)",
                ["engine", "steering", "tokens/s", "÷ steer-away f32 unsteered"], rows)
    ratios = []
    for mode in ("unsteered", "CAA"):
        for engine in ("steer-away f32", "steer-away f32 eager (before)"):
            ours_rate = rate[(engine, mode)]
            ratios.append([engine, mode, f"{ours_rate / rate[('llama.cpp F32', mode)]:.2f}",
                           f"{ours_rate / rate[('llama.cpp Q4_1', mode)]:.2f}", f"{ours_rate / bound:.2f}"])
    print_table(f"batch 1: ours ÷ llama.cpp, and ÷ the memory-bandwidth bound ({bound:.1f} tokens/s: "
                f"{weight_bytes(lm.model) / 2**20:.0f} MiB of f32 weights at the measured read bandwidth)",
                ["engine", "steering", "÷ llama.cpp F32", "÷ llama.cpp Q4_1", "÷ bound"], ratios)
    for engine in ("steer-away f32", "steer-away f32 eager (before)"):
        print(f"{engine}: CAA ÷ unsteered {rate[(engine, 'CAA')] / rate[(engine, 'unsteered')]:.2f}")
    print(f"batch 8: per-user CAA ÷ unsteered "
          f"{rate[('steer-away f32, batch 8', 'per-user CAA')] / rate[('steer-away f32, batch 8', 'unsteered')]:.2f}; "
          f"per-user CAA batch 8 ÷ llama.cpp F32 one vector batch 1 "
          f"{rate[('steer-away f32, batch 8', 'per-user CAA')] / rate[('llama.cpp F32', 'CAA')]:.2f}")
    flags = cpu_flags()
    bf16 = sorted(f for f in flags if "bf16" in f or f.startswith("amx"))
    print(f"CPU bf16 instructions: {', '.join(bf16) if bf16 else 'none (no avx512_bf16 / amx)'}")


if __name__ == "__main__":
    main()
