"""Is one version of the server slower than another? The same load on two source trees, alternated.

Each round runs the same seeded Poisson arrivals of streamed requests (8 users, each with their own
CAA vector; continuous batching, max batch 8) against a server started from each tree in turn, in
a fresh process per run (`PYTHONPATH=<tree>`), so both see the same machine state within a round.
Prints the median over rounds of completed requests/s, time to first token and latency per tree,
and new ÷ old. The child only uses API both trees have (`create_app`, `save_bank`, `load_model`).

    python bench/server_ab.py --old /path/to/old/src --new src --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import base_parser, print_table
from load_client import arrivals, quantile, run_rate


def child(args: argparse.Namespace) -> None:
    """Serve from whichever `steer_away` this process imports, send the load, write the figures.

    Imported here, not at the top: the tree to import comes from this child's PYTHONPATH."""
    from steer_away import internals
    from steer_away.models import load_model
    from steer_away.server import ServerSettings, create_app, serve_in_thread
    try:
        from steer_away.steering.vectors.vector import SteeringVector, save_bank
    except ImportError:  # a tree from before steering/ was split into framework / methods / vectors
        from steer_away.steering.vectors import SteeringVector, save_bank  # type: ignore[no-redef]

    torch.set_grad_enabled(False)
    lm = load_model(args.model, device=args.device)
    depth, hidden = internals.num_layers(lm.model), internals.hidden_size(lm.model)
    layers = list(range(round(16 * depth / 32), round(22 * depth / 32) + 1))  # the study's layers, by depth

    def vector(seed: int) -> SteeringVector:
        gen = torch.Generator().manual_seed(seed)
        return SteeringVector({l: 0.1 * torch.randn(hidden, generator=gen) for l in layers}, lm.model_id,
                              hidden, depth)

    bank = Path(tempfile.mkdtemp()) / "vectors"
    save_bank(bank, vector(0), {f"u{i}": vector(i + 1) for i in range(8)})
    app = create_app(lm, vectors=str(bank), settings=ServerSettings(max_batch=8, scheduler="continuous",
                                                                    batch_window_s=0.01, max_queue=256))
    server, thread, url = serve_in_thread(app)
    run_rate(url, arrivals(50.0, 2, 4, 4, seed=99))  # warm-up
    outcomes = run_rate(url, arrivals(args.rate, args.requests, args.min_tokens, args.max_tokens, args.seed))
    server.should_exit = True
    thread.join(timeout=10)
    good = [o for o in outcomes if o.status == 200]
    span = max(o.done for o in outcomes) - min(o.arrived for o in outcomes)
    ttft = [o.first_token - o.arrived for o in good]
    latency = [o.done - o.arrived for o in good]
    Path(args.child_out).write_text(json.dumps({
        "completed_per_s": len(good) / span, "errors": len(outcomes) - len(good),
        "ttft_p50": statistics.median(ttft), "latency_p50": statistics.median(latency),
        "latency_p95": quantile(latency, 0.95)}))


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--old", help="the old tree's src folder")
    parser.add_argument("--new", help="the new tree's src folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=2.0, help="arrivals per second")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--min-tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_out:
        child(args)
        return
    if not (args.old and args.new):
        parser.error("--old and --new are required")
    trees = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve())}
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    passed = [a for a in sys.argv[1:] if a not in (args.old, args.new, "--old", "--new")]
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            out = Path(tempfile.mkdtemp()) / "figures.json"
            env = {**os.environ, "PYTHONPATH": tree}
            subprocess.run([sys.executable, __file__, *passed, "--child-out", str(out)], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            figures[name].append(json.loads(out.read_text()))
            print(f"round {round_ + 1}, {name}: {figures[name][-1]}", flush=True)
    keys = ["completed_per_s", "ttft_p50", "latency_p50", "latency_p95", "errors"]
    medians = {name: {k: statistics.median(f[k] for f in runs) for k in keys} for name, runs in figures.items()}
    rows = [[name, *(f"{medians[name][k]:.3f}" for k in keys)] for name in trees]
    rows.append(["new ÷ old", *(f"{medians['new'][k] / medians['old'][k]:.3f}" if medians["old"][k] else "-"
                                for k in keys)])
    print_table(f"{args.requests} streamed requests at {args.rate:g}/s, {args.min_tokens}-{args.max_tokens} tokens, "
                f"8 users with their own CAA vector, continuous batching (max 8); medians of {args.rounds} "
                "alternating rounds", ["tree", "completed/s", "TTFT p50 s", "latency p50 s", "latency p95 s",
                                       "errors"], rows)


if __name__ == "__main__":
    main()
