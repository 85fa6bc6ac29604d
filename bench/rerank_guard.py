"""Reranking's relevance guard: the trade-off between moving toward each user's TOXICITY and keeping the request.

Reranking picks, of N sampled answers, the one nearest the user's preferred TOXICITY; on provocative
prompts that is often the sample that drifts off the request. The guard lets it choose only among the
candidates whose relevance (the unsteered model's PMI of the answer given its prompt) is within
`guard` nats per token of the most relevant candidate's. This script measures, on prompts *outside*
a demo run's evaluation set (the shipped prompts it did not answer) and for its users, at each guard:
TOXICITY distance against the unsteered model's greedy answers (Δ%, with a user- and prompt-clustered
interval), the chosen answers' relevance against the unsteered answers' (paired, with interval; the relevance the
guard and every sweep measure), and the share refused. The default guard follows the rule `steer-away
calibrate` uses for α: of the guards whose relevance is not significantly below unsteered, the
smallest that reaches 90 % of the largest drop in distance among them (nearly as much, more gently).

    python bench/rerank_guard.py --run steer-away-demo [--per-category 10] [--guards 0,0.25,0.5,1,none]
"""

from __future__ import annotations

import math
import sqlite3
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import base_parser, bench_model, machine_line, print_table
from steer_away.data.prompts import SHIPPED, checked_prompts, pick_per_category
from steer_away.decoding.scoring import answer_scores
from steer_away.evaluation.metrics.functions import cluster_bootstrap
from steer_away.generation import GenerationConfig, generate
from steer_away.profiles import load_profiles, pick_users
from steer_away.scoring.jigsaw import JigsawBiLSTMScorer
from steer_away.scoring.refusal import is_refusal
from steer_away.steering.framework.method import RowSteering, Unsteered
from steer_away.steering.framework.targets import ToxicityTargets
from steer_away.steering.methods.rerank import Rerank


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a demo / sweep run folder (profiles.json, results.sqlite)")
    parser.add_argument("--per-category", type=int, default=10, help="held-out prompts per prompt category")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--guards", default="0,0.1,0.25,0.5,0.75,1,1.5,none")
    args = parser.parse_args()
    run = Path(args.run)
    lm = bench_model(args)
    profiles = load_profiles(run / "profiles.json")
    users = pick_users(profiles, 3)
    with sqlite3.connect(run / "results.sqlite") as db:
        answered = {r[0] for r in db.execute("SELECT DISTINCT prompt_id FROM answers")}
    held_out = [p for p in checked_prompts(SHIPPED, None) if p.prompt_id not in answered]
    prompts = [p.text for p in pick_per_category(held_out, args.per_category, seed=1)]
    print(machine_line(lm))
    print(f"{len(prompts)} prompts none of {run}'s cells answered x {len(users)} users; {args.candidates} candidates "
          f"at T 0.7, {args.tokens} new tokens")
    config = GenerationConfig(max_new_tokens=args.tokens)
    sampled = GenerationConfig(max_new_tokens=args.tokens, do_sample=True, temperature=0.7)
    n = args.candidates
    base = [g.text for g in generate(lm, prompts, config=config)]
    drawn = [g.text for g in generate(lm, [p for p in prompts for _ in range(n)], config=sampled,
                                      seeds=list(range(len(prompts) * n)))]
    scorer = JigsawBiLSTMScorer()
    measured = answer_scores(lm, prompts + [p for p in prompts for _ in range(n)], base + drawn, relevance=True,
                             batch_size=32)
    base_rel, drawn_rel = [m.relevance for m in measured[:len(prompts)]], [m.relevance for m in measured[len(prompts):]]
    base_tox, drawn_tox = scorer.score(base)[:, 0], scorer.score(drawn)[:, 0]
    targets = ToxicityTargets(profiles, scorer, "rerank")
    rows_users = [u for _ in prompts for u in users]
    rows_prompts = [str(i) for i in range(len(prompts)) for _ in users]
    want = np.array([targets.of(u) for u in rows_users])
    base_dist = np.abs(np.repeat(base_tox, len(users)) - want)
    table = []
    for text in args.guards.split(","):
        guard = None if text.strip() == "none" else float(text)
        method = Rerank(Unsteered(), scorer, targets, samples=n, guard=guard)
        chosen = []
        for i in range(len(prompts)):
            texts, rel = drawn[i * n:(i + 1) * n], drawn_rel[i * n:(i + 1) * n]
            for u in users:
                chosen.append(i * n + method.choose(RowSteering(u), texts, [0.0] * n, rel))
        dist = np.abs(drawn_tox[chosen] - want)
        rel = np.array([drawn_rel[c] for c in chosen])
        brel = np.repeat(np.array(base_rel), len(users))
        ok = np.isfinite(rel) & np.isfinite(brel)
        pct = 100 * (dist.mean() - base_dist.mean()) / base_dist.mean()
        pct_ci = cluster_bootstrap(dist, rows_users, rows_prompts, baseline=base_dist, relative=True)
        rel_ci = cluster_bootstrap(rel[ok], list(np.array(rows_users)[ok]), list(np.array(rows_prompts)[ok]),
                                   baseline=brel[ok])
        refused = np.mean([is_refusal(drawn[c]) for c in chosen])
        table.append([text, f"{pct:+.1f}% [{pct_ci[0]:+.0f}, {pct_ci[1]:+.0f}]",
                      f"{(rel[ok] - brel[ok]).mean():+.3f} [{rel_ci[0]:+.3f}, {rel_ci[1]:+.3f}]",
                      f"{100 * refused:.0f}%", "keeps relevance" if rel_ci[1] >= 0 else "loses relevance"])
    print_table("Guard: TOXICITY distance and relevance against the unsteered model (held-out prompts)",
                ["guard (nats/token)", "TOXICITY distance Δ% [95% CI]", "Δ relevance [95% CI]", "refused", ""], table)
    print(f"\nunsteered: TOXICITY distance {base_dist.mean():.4f}, relevance {np.nanmean(base_rel):.3f}, "
          f"refused {100 * np.mean([is_refusal(t) for t in base]):.0f}%; candidates refused "
          f"{100 * np.mean([is_refusal(t) for t in drawn]):.0f}%")
    kept = [row for row in table if row[-1] == "keeps relevance" and row[0].strip() != "none"]
    if kept:
        largest = min(float(row[1].split("%")[0]) for row in kept)
        chosen = min((row for row in kept if float(row[1].split("%")[0]) <= 0.9 * largest), key=lambda row: float(row[0]))
        print(f"default: guard {chosen[0]} (the smallest that keeps relevance and reaches 90 % of the largest drop "
              f"in distance among those that do, {largest:+.1f} %)")
    if not math.isfinite(float(base_dist.mean())):
        print("no finite distances: are the run's profiles scored by the offline scorer?")


if __name__ == "__main__":
    main()
