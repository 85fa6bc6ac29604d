"""Load check of the chat server on loopback: requests arriving over time, three schedulers.

Requests arrive as a Poisson process at each of several rates (the same seeded arrival times,
prompts, users and lengths for every scheduler), each a different user with their own steering
vector, asking for between --min-tokens and --max-tokens tokens, streamed. The real server (uvicorn,
in this process, on 127.0.0.1) runs three ways:

- continuous: a request joins the running batch at the next decoding step (max 8 requests);
- static: a batch is decoded to its end before waiting requests start (max 8; the server before
  continuous batching);
- one at a time: max batch 1.

For each rate and scheduler: completed requests/s over the span from the first arrival to the last
completion, time to first token and end-to-end latency (p50 / p95, from the request's arrival),
and how many requests shared a decoding step on average. Schedulers take turns within a rate.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import base_parser, bench_model, machine_line, print_table, random_vector
from load_client import arrivals, quantile, run_rate
from steer_away.server import ServerSettings, create_app, serve_in_thread
from steer_away.steering.vectors.layers import default_layers
from steer_away.steering.vectors.vector import save_bank

SCHEDULERS = {"continuous": ("continuous", 8), "static": ("static", 8), "one at a time": ("continuous", 1)}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.5,1,2", help="arrival rates, requests per second")
    parser.add_argument("--requests", type=int, default=20, help="requests per rate and scheduler")
    parser.add_argument("--min-tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    lm = bench_model(args)
    layers = default_layers(lm.model)
    bank = Path(tempfile.mkdtemp()) / "vectors"
    save_bank(bank, random_vector(lm, 0, layers) * 0.1, {f"u{i}": random_vector(lm, i + 1, layers) * 0.1
                                                          for i in range(8)})
    print(machine_line(lm))
    servers = {}
    for label, (scheduler, max_batch) in SCHEDULERS.items():
        app = create_app(lm, vectors=str(bank), settings=ServerSettings(
            max_batch=max_batch, scheduler=scheduler, batch_window_s=0.01, max_queue=256))
        servers[label] = (app, *serve_in_thread(app))
    for _app, _server, _thread, url in servers.values():  # warm-up
        run_rate(url, arrivals(50.0, 2, 4, 4, seed=99))
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        plan = arrivals(rate, args.requests, args.min_tokens, args.max_tokens, seed=args.seed)
        for label, (app, _server, _thread, url) in servers.items():
            engine = app.state.engine
            mark = engine.steps_run
            outcomes = run_rate(url, plan)
            bad = sum(o.status != 200 for o in outcomes)
            span = max(o.done for o in outcomes) - min(o.arrived for o in outcomes)
            ttft = [o.first_token - o.arrived for o in outcomes]
            latency = [o.done - o.arrived for o in outcomes]
            sizes = engine.step_sizes_since(mark)
            rows.append([f"{rate:g}", label, f"{(len(outcomes) - bad) / span:.2f}",
                         f"{statistics.median(ttft):.2f} / {quantile(ttft, 0.95):.2f}",
                         f"{statistics.median(latency):.2f} / {quantile(latency, 0.95):.2f}",
                         f"{statistics.mean(sizes):.1f}" if sizes else "-", str(bad)])
            print("  " + " | ".join(rows[-1]), flush=True)
    for _app, server, thread, _url in servers.values():
        server.should_exit = True
        thread.join(timeout=10)
    print_table(f"{args.requests} streamed requests per cell, Poisson arrivals, {args.min_tokens}-{args.max_tokens} "
                "tokens each (uniform), 8 users with their own CAA vector, loopback",
                ["arrivals/s", "scheduler", "completed/s", "TTFT p50 / p95 s", "latency p50 / p95 s",
                 "requests per step", "errors"], rows)
    by = {(r[0], r[1]): r for r in rows}
    for rate in dict.fromkeys(r[0] for r in rows):
        cont, stat, one = (by[(rate, s)] for s in SCHEDULERS)
        print(f"arrivals {rate}/s: continuous ÷ static throughput {float(cont[2]) / float(stat[2]):.2f}×, "
              f"÷ one at a time {float(cont[2]) / float(one[2]):.2f}×; p95 latency static ÷ continuous "
              f"{float(stat[4].split(' / ')[1]) / float(cont[4].split(' / ')[1]):.2f}×")


if __name__ == "__main__":
    main()
