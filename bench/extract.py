"""Vector extraction throughput: pairs per second for N PRISM-shaped pairs (default 200)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import base_parser, machine_line, print_table, sync
from steer_away.data.pairs import preference_pairs, sample_pairs
from steer_away.data.prism import load_prism
from steer_away.models import load_model
from steer_away.steering.vectors.extract import extract_pair_activations
from steer_away.steering.vectors.layers import default_layers


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--prism", default=None, help="PRISM folder or 'hub' (default: our fixture)")
    args = parser.parse_args()
    lm = load_model(args.model, device=args.device)
    layers = default_layers(lm.model)
    pairs = sample_pairs(preference_pairs(load_prism(args.prism).turns), args.pairs, seed=0)
    print(machine_line(lm))
    extract_pair_activations(lm, pairs[:8], layers, progress=False)  # warm-up
    rows = []
    for batch in (1, 8, 16):
        times = []
        for _ in range(max(1, args.repeats // 2)):
            sync(lm.device)
            start = time.perf_counter()
            extract_pair_activations(lm, pairs, layers, batch_size=batch, progress=False)
            sync(lm.device)
            times.append(time.perf_counter() - start)
        best = sorted(times)[len(times) // 2]
        rows.append([str(batch), f"{best:.1f}", f"{len(pairs) / best:.1f}"])
    print_table(f"Extraction of {len(pairs)} pairs at layers {layers[0]}-{layers[-1]} (2 forwards per pair)",
                ["batch", "seconds", "pairs/s"], rows)


if __name__ == "__main__":
    main()
