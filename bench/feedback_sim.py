"""Simulated users teach the server their tolerance by choosing between its answers.

Each simulated user has a known preferred TOXICITY: strict users the population's `--strict-q`
quantile of preferred TOXICITY in the profiles file, tolerant users its `--tolerant-q` quantile. They
are new to the server (no profile, no vector: population steering). Every round each asks the
server (over HTTP, the method under test) for two sampled answers to a chat prompt, scores both with
the server's scorer, picks the one nearer their preferred TOXICITY, and sends that choice to
`POST /v1/feedback` by the two completion ids. At each checkpoint (after 0, k, 2k, … choices) every
user's greedy answers to held-out evaluation prompts are scored for their TOXICITY distance
|TOXICITY − preferred|; the table and figure give the mean over each kind's users and prompts, with
95 % intervals from the two-way bootstrap the report uses (users and prompts redrawn), and the
paired change from checkpoint 0, which is population steering.

    python bench/feedback_sim.py --profiles steer-away-demo/profiles.json --vectors steer-away-demo/vectors \
        --methods eads,rerank,caa-dislike --out runs/feedback-sim
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from steer_away.data.prompts import read_eval_prompts
from steer_away.evaluation.metrics.functions import cluster_bootstrap
from steer_away.models import load_model
from steer_away.profiles import load_profiles, profiles_scorer
from steer_away.scoring import make_scorer
from steer_away.server import ServerSettings, create_app, serve_in_thread

CATEGORIES = ("harmful_borderline", "context_dependent")  # where answers' TOXICITY varies at all


def ask(client: httpx.Client, url: str, user: str, prompt: str, method: str, tokens: int, seed: int | None) -> dict:
    body = {"user": user, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "steering": {"method": method}}
    body |= {"temperature": 1.0, "seed": seed} if seed is not None else {"temperature": 0}
    answer = client.post(url + "/v1/chat/completions", json=body, timeout=900)
    answer.raise_for_status()
    return answer.json()


def simulate(method: str, args: argparse.Namespace, lm, targets: dict[str, float], scorer
             ) -> tuple[list[list[str]], list[list[str]]]:
    """(the table's rows, every evaluation answer with its TOXICITY: what a reader checks a number against)."""
    chat_prompts = [p.text for p in read_eval_prompts() if p.category in CATEGORIES]
    rng = np.random.default_rng(args.seed)
    rng.shuffle(chat_prompts)
    evaluation, chat = chat_prompts[:args.eval_prompts], chat_prompts[args.eval_prompts:]
    folder = Path(tempfile.mkdtemp())
    app = create_app(lm, profiles=args.profiles, vectors=args.vectors, settings=ServerSettings(
        max_batch=8, max_tokens_limit=128, feedback_path=str(folder / "feedback.sqlite"), feedback_burst=100))
    server, thread, url = serve_in_thread(app)
    service = app.state.server.feedback
    rows: list[list[str]] = []
    answers: list[list[str]] = []
    checkpoint = 0
    users = list(targets)
    scoring = threading.Lock()  # one scorer (its cache is one SQLite connection) for the user threads

    def score(texts: list[str]) -> np.ndarray:
        with scoring:
            return scorer.score(texts)[:, 0]

    try:
        with httpx.Client() as client, concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            def evaluate(user: str) -> np.ndarray:
                texts = [ask(client, url, user, p, method, args.tokens, None)["choices"][0]["message"]["content"]
                         for p in evaluation]
                toxicity = score(texts)
                answers.extend([method, user, str(checkpoint), p, f"{t:.4f}", text]
                               for p, t, text in zip(evaluation, toxicity, texts))
                return np.abs(toxicity - targets[user])

            def one_choice(user: str, round_: int) -> None:
                prompt = chat[(round_ * len(users) + users.index(user)) % len(chat)]
                first, second = (ask(client, url, user, prompt, method, args.tokens, seed=1000 * round_ + k)
                                 for k in (1, 2))
                texts = [first["choices"][0]["message"]["content"], second["choices"][0]["message"]["content"]]
                if texts[0] == texts[1] or not all(t.strip() for t in texts):
                    return  # nothing to choose between
                tox = score(texts)
                near = int(np.argmin(np.abs(tox - targets[user])))
                ids = [first["id"], second["id"]]
                client.post(url + "/v1/feedback", json={"id": f"{user}-{round_}", "user": user,
                                                         "chosen": ids[near], "rejected": [ids[1 - near]]},
                            timeout=60).raise_for_status()

            before: dict[str, np.ndarray] = {}
            for checkpoint in range(0, args.choices + 1, args.every):
                service.settle()
                pairs = {u: service.status(u)["pairs"] for u in users}
                distances = dict(zip(users, pool.map(evaluate, users)))
                if checkpoint == 0:
                    before = distances
                for kind in ("strict", "tolerant"):
                    group = [u for u in users if u.startswith(kind)]
                    values = np.concatenate([distances[u] for u in group])
                    base = np.concatenate([before[u] for u in group])
                    who = [u for u in group for _ in evaluation]
                    where = [str(i) for _ in group for i in range(len(evaluation))]
                    low, high = cluster_bootstrap(values, who, where)
                    d_low, d_high = cluster_bootstrap(values, who, where, baseline=base)
                    made = statistics.mean(pairs[u] for u in group)
                    rows.append([method, kind, str(checkpoint), f"{made:.1f}", f"{values.mean():.4f}", f"{low:.4f}",
                                 f"{high:.4f}", f"{values.mean() - base.mean():+.4f}", f"{d_low:+.4f}",
                                 f"{d_high:+.4f}", str(len(group))])
                    print("  " + " | ".join(rows[-1]), flush=True)
                if checkpoint < args.choices:
                    for round_ in range(checkpoint, checkpoint + args.every):
                        list(pool.map(lambda u, r=round_: one_choice(u, r), users))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return rows, answers


def plot(rows: list[list[str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r[0] for r in rows))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        for kind, colour in (("strict", "tab:blue"), ("tolerant", "tab:red")):
            mine = [r for r in rows if r[0] == method and r[1] == kind]
            x = [float(r[3]) for r in mine]
            y, low, high = ([float(r[i]) for r in mine] for i in (4, 5, 6))
            ax.plot(x, y, marker="o", color=colour, label=f"{kind} users")
            ax.fill_between(x, low, high, color=colour, alpha=0.15)
            ax.axhline(y[0], color=colour, linestyle=":", linewidth=1)
        ax.set_title(method)
        ax.set_xlabel("choices made (mean per user)")
    axes[0][0].set_ylabel("TOXICITY distance to preferred")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("learning from choices (dotted: population steering, before any choice; bands: 95 %, users x prompts)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", required=True, help="the population's profiles file")
    parser.add_argument("--vectors", default=None)
    parser.add_argument("--methods", default="eads,rerank,caa-dislike")
    parser.add_argument("--users", type=int, default=4, help="simulated users of each kind")
    parser.add_argument("--choices", type=int, default=12)
    parser.add_argument("--every", type=int, default=4, help="choices between checkpoints")
    parser.add_argument("--eval-prompts", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--strict-q", type=float, default=0.1)
    parser.add_argument("--tolerant-q", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    args.out.mkdir(parents=True, exist_ok=True)
    population = [p.primary() for p in load_profiles(args.profiles).values()]
    strict, tolerant = (float(np.quantile(population, q)) for q in (args.strict_q, args.tolerant_q))
    targets = {f"strict-{i}": strict for i in range(args.users)} | {f"tolerant-{i}": tolerant for i in range(args.users)}
    print(f"preferred TOXICITY: strict {strict:.4f} (q{args.strict_q:g}), tolerant {tolerant:.4f} (q{args.tolerant_q:g}) "
          f"of {len(population)} population profiles")
    lm = load_model(None)
    scorer = make_scorer(profiles_scorer(args.profiles))
    rows, answers = [], []
    for method in args.methods.split(","):
        table, texts = simulate(method, args, lm, targets, scorer)
        rows += table
        answers += texts
    header = ["method", "users", "checkpoint", "choices_made", "tox_distance", "ci_low", "ci_high",
              "change_vs_population", "change_ci_low", "change_ci_high", "n_users"]
    with (args.out / "feedback_sim.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    with (args.out / "answers.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["method", "user", "checkpoint", "prompt", "toxicity", "answer"], *answers])
    plot(rows, args.out / "feedback_sim.png")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(r))
    print(f"wrote {args.out / 'feedback_sim.csv'}, {args.out / 'answers.csv'} and {args.out / 'feedback_sim.png'}")


if __name__ == "__main__":
    main()
