"""Classifier-guided decoding: the cheaper windowed judgement against the exact one.

The exact rule scores the whole answer so far plus each top-k candidate at every step; `window=W`
scores only the last W tokens plus the candidate. Both run on the same prompts, users and scorer
in one process (round-robin, medians of repeats); printed: the time ratio, how many answers and
tokens are identical, and the TOXICITY distance to each user's target under both. Usage:
    python bench/guided_window.py --profiles RUN/profiles.json [--windows 4,8,16]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import base_parser, bench_model, interleaved_medians, machine_line, print_table
from steer_away.data.prompts import SHIPPED, checked_prompts, pick_per_category
from steer_away.generation import GenerationConfig, generate
from steer_away.profiles import load_profiles, pick_users
from steer_away.scoring.jigsaw import JigsawBiLSTMScorer
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.framework.targets import ToxicityTargets
from steer_away.steering.methods.guided import ClassifierGuided


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--profiles", required=True, help="profiles JSON (a sweep's run folder has one)")
    parser.add_argument("--windows", default="4,8,16", help="windows to compare with the exact rule")
    parser.add_argument("--prompts", type=int, default=12, help="prompts per user (shipped set, by category)")
    args = parser.parse_args()
    lm = bench_model(args)
    profiles = load_profiles(args.profiles)
    users = pick_users(profiles, 1)  # one strict, one moderate, one tolerant user
    prompts = [p.text for p in pick_per_category(checked_prompts(SHIPPED, None), -(-args.prompts // 4))][:args.prompts]
    rows = [RowSteering(u) for _ in prompts for u in users]
    texts = [p for p in prompts for _ in users]
    scorer = JigsawBiLSTMScorer()
    targets = ToxicityTargets(profiles, scorer, "guided")
    config = GenerationConfig(max_new_tokens=args.tokens)
    windows = [0] + [int(w) for w in args.windows.split(",")]
    methods = {w: ClassifierGuided(scorer, targets, window=w) for w in windows}
    print(machine_line(lm))
    print(f"{len(prompts)} prompts x {len(users)} users ({', '.join(users)}), {args.tokens} new tokens, "
          f"top-k {methods[0].top_k}, λ {methods[0].alpha:g}; median of {args.repeats} round-robin repeats")
    answers = {w: generate(lm, texts, method=m, rows=rows, config=config) for w, m in methods.items()}
    times = interleaved_medians({str(w): (lambda m=m: generate(lm, texts, method=m, rows=rows, config=config))
                                 for w, m in methods.items()}, lm.device, args.repeats, args.warmup)
    wanted = np.array([targets.of(r.user_id) for r in rows])
    table = []
    for w in windows:
        same = sum(a.token_ids == e.token_ids for a, e in zip(answers[w], answers[0]))
        tokens = sum(sum(x == y for x, y in zip(a.token_ids, e.token_ids)) for a, e in zip(answers[w], answers[0]))
        total = sum(len(e.token_ids) for e in answers[0])
        distance = np.abs(scorer.score([a.text for a in answers[w]])[:, 0] - wanted).mean()
        table.append(["exact" if w == 0 else f"window {w}", f"{times[str(w)]:.2f}", f"{times[str(w)] / times['0']:.2f}",
                      f"{same}/{len(rows)}", f"{tokens}/{total}", f"{distance:.4f}"])
    print_table("Guided decoding: windowed judgement against the exact one",
                ["rule", "seconds", "time ÷ exact", "identical answers", "same token at same place",
                 "TOXICITY distance"], table)


if __name__ == "__main__":
    main()
