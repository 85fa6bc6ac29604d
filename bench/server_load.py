"""Load check of the chat server on loopback: requests/s and latency, batched vs one at a time.

Starts the real server (uvicorn, in this process) twice on 127.0.0.1 — once with batching
(max batch 8) and once with max batch 1 — and sends the same fixed number of requests from N
concurrent clients, each a different user with their own steering vector.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import base_parser, machine_line, print_table
from decode import PROMPTS, random_vector
from steer_away import internals
from steer_away.models import load_model
from steer_away.server import ServerSettings, create_app, serve_in_thread
from steer_away.steering.vectors import save_bank


def run_load(url: str, clients: int, requests: int, tokens: int) -> tuple[float, list[float]]:
    def one(i: int) -> float:
        body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "user": f"u{i % 8}",
                "max_tokens": tokens}
        start = time.perf_counter()
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(requests)))
    return time.perf_counter() - start, latencies


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    lm = load_model(args.model, device=args.device)
    layers = internals.default_layers(lm.model)
    bank = Path(tempfile.mkdtemp()) / "vectors"
    save_bank(bank, random_vector(lm, 0, layers) * 0.1, {f"u{i}": random_vector(lm, i + 1, layers) * 0.1
                                                          for i in range(8)})
    print(machine_line(lm))
    rows = []
    for label, max_batch in (("batched (max 8)", 8), ("one at a time", 1)):
        app = create_app(lm, vectors=str(bank), settings=ServerSettings(max_batch=max_batch, batch_window_s=0.01))
        server, thread, url = serve_in_thread(app)
        run_load(url, 2, 2, 4)  # warm-up
        wall, latencies = run_load(url, args.clients, args.requests, args.tokens)
        server.should_exit = True
        thread.join()
        q = statistics.quantiles(latencies, n=20)
        sizes = app.state.engine.batch_sizes
        rows.append([label, f"{args.requests / wall:.2f}", f"{statistics.median(latencies):.2f}", f"{q[18]:.2f}",
                     f"{statistics.mean(sizes):.1f}"])
    print_table(f"{args.requests} requests from {args.clients} concurrent clients (8 users, CAA), "
                f"{args.tokens} tokens each, loopback",
                ["server", "requests/s", "p50 latency s", "p95 latency s", "mean batch"], rows)
    print(f"\nbatched ÷ one-at-a-time throughput: {float(rows[0][1]) / float(rows[1][1]):.2f}×")


if __name__ == "__main__":
    main()
