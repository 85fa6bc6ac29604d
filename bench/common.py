"""Shared helpers for the benchmark scripts: arguments, timing with warm-up and medians, tables."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from steer_away import internals
from steer_away.models import LanguageModel, LoadedModel, load_model
from steer_away.random_model import SHAPES, random_llama
from steer_away.steering.vectors.vector import SteeringVector

# What the decode benchmarks ask: short, everyday, nothing a steering method should change much.
PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Give me three tips for a job interview.",
    "What is the difference between weather and climate?",
    "Write a short note thanking a colleague for their help.",
    "How do vaccines train the immune system?",
    "Suggest a name for a cat that likes to sleep.",
    "Why do people disagree about taxes?",
    "Describe a calm morning routine.",
]


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument("--shape", default=None, choices=sorted(SHAPES),
                        help="instead of --model: random weights of this shape built on the device (no download)")
    parser.add_argument("--device", default="auto", help="cpu or cuda (default: auto)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens per row")
    return parser


def bench_model(args: argparse.Namespace, device: str | None = None) -> LoadedModel:
    """--shape's random model when given (bf16 on a GPU), else --model (default: the embedded SmolLM2)."""
    if args.shape:
        return random_llama(args.shape, device=device or args.device)
    return load_model(args.model, device=device or args.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                        warmup: int) -> dict[str, float]:
    """Median time of each function, run round-robin so drift in machine load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def machine_line(lm: object) -> str:
    device = lm.device  # type: ignore[attr-defined]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return f"model {lm.model_id} ({lm.dtype}) on {name}, torch {torch.__version__}"  # type: ignore[attr-defined]


def copy_bandwidth(device: torch.device, megabytes: int = 512) -> float:
    """Bytes per second moved by a large device-to-device copy (read + write)."""
    n = megabytes * 2**20 // 4
    src, dst = torch.randn(n, device=device), torch.empty(n, device=device)
    seconds = median_seconds(lambda: dst.copy_(src), device, repeats=7, warmup=2)
    return 2 * n * 4 / seconds


def weight_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:  # tied embeddings count once
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def random_vector(lm: LanguageModel, seed: int, layers: list[int]) -> SteeringVector:
    """A seeded random direction at `layers` of `lm`'s shape: steering work without extracted vectors."""
    gen = torch.Generator().manual_seed(seed)
    hidden = internals.hidden_size(lm.model)
    return SteeringVector({l: torch.randn(hidden, generator=gen) for l in layers}, lm.model_id, hidden,
                          internals.num_layers(lm.model))
