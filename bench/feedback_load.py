"""Feedback under serving load: how fast a choice is acknowledged, and what learning from choices costs
the chat answers running beside it.

The real server (uvicorn, loopback, continuous batching, 8 users with their own CAA vector from a
real vector store, a feedback file) takes `bench/server_load.py`'s streamed chat requests (the same
seeded Poisson arrivals) in alternating rounds: chat alone, then chat with feedback events arriving
as a Poisson process of their own, each a choice between two quoted answers. Every user is one
choice short of the cold-start threshold from a stored history, so from their first choice in the
run their profile and per-user vector (their choices' activations, read by the decoding thread in
its idle moments) are rebuilt and swapped in while chat runs. Prints the feedback acknowledgement
latency (p50 / p95 / max, from send to response) and chat TTFT / latency with feedback on ÷ off.

    python bench/feedback_load.py                         # the embedded model, one choice per two answers
    python bench/feedback_load.py --feedback-rate 4       # 8 times more choices than users could make
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import base_parser, bench_model, machine_line, print_table
from load_client import arrivals, quantile, run_rate
from steer_away.data.pairs import PreferencePair
from steer_away.profiles import save_profiles
from steer_away.profiles.build import UserProfile
from steer_away.profiles.online import MIN_PAIRS, Choice
from steer_away.server import ServerSettings, create_app, serve_in_thread
from steer_away.server.feedback_store import FeedbackStore
from steer_away.steering.vectors.compose import dislike_vectors, population_vector
from steer_away.steering.vectors.extract import extract_pair_activations, save_pair_activations
from steer_away.steering.vectors.layers import default_layers
from steer_away.steering.vectors.vector import save_bank

ANSWERS = ["Sure, here is a calm and careful answer to that.", "Ugh, what a dumb question, figure it out yourself.",
           "I would rather not say anything rude about them.", "They are idiots and you know it.",
           "Here are three polite ways to put it.", "Honestly, that is a stupid plan."]


def population(users: int) -> dict[str, UserProfile]:
    """Synthetic population profiles spread over the three sensitivities (cut-offs recorded)."""
    out = {}
    for i in range(users):
        value = 0.01 + 0.04 * i / max(users - 1, 1)
        profile = UserProfile(f"u{i}", ["TOXICITY"], [value], [value + 0.05], 0.05, None,
                              ("strict", "moderate", "tolerant")[i * 3 // users], [0.0], 4, 4)
        profile.extra["sensitivity_cutoffs"] = [0.02, 0.04]
        out[profile.user_id] = profile
    return out


def vector_store(lm, folder: Path) -> Path:
    """A real vector store for the 8 users: pair activations read from the model (2 pairs each, from
    ANSWERS), the population vector and the dislike bank composed from them, as the CLI writes them; so
    the server also learns each user's vector from their choices (a pass of the model per batch)."""
    pairs = [PreferencePair(f"u{i}", f"c{i}-{k}", 0, "unguided", f"question {k}", ANSWERS[2 * k], ANSWERS[2 * k + 1], 90, 20)
             for i in range(8) for k in range(2)]
    acts = extract_pair_activations(lm, pairs, default_layers(lm.model), progress=False)
    save_pair_activations(acts, folder / "pair_activations.safetensors", lm.shape)
    population_vector(acts, lm.shape).save(folder / "population.safetensors")
    save_bank(folder / "dislike", population_vector(acts, lm.shape), dislike_vectors(acts, lm.shape, [0.3] * len(pairs)))
    return folder


def history(path: Path, per_user: int) -> None:
    """Choices the users made before this run (replayed when the server starts): one more each and they
    are past the cold-start threshold, so the run's choices swap profiles and vectors in from the start."""
    store = FeedbackStore(path)
    for i in range(8):
        for k in range(per_user):
            store.add(Choice(f"h{i}-{k}", f"u{i}", f"question {k}", ANSWERS[k % 6], (ANSWERS[(k + 1) % 6],)))
    store.close()


def send_feedback(url: str, rate: float, stop: threading.Event, latencies: list[float], errors: list[int],
                  seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=30) as client:
        n = 0
        while not stop.is_set():
            time.sleep(rng.expovariate(rate))
            chosen, rejected = rng.sample(ANSWERS, 2)
            body = {"id": f"s{seed}-{n}", "user": f"u{rng.randrange(8)}", "chosen": {"text": f"{chosen} ({n})"},
                    "rejected": [{"text": f"{rejected} ({n})"}]}
            sent = time.perf_counter()
            answer = client.post(url + "/v1/feedback", json=body)
            latencies.append(time.perf_counter() - sent)
            if answer.status_code != 200:
                errors.append(answer.status_code)
            n += 1


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1.0, help="chat arrivals per second")
    parser.add_argument("--feedback-rate", type=float, default=0.5,
                        help="feedback events per second (default: one choice per two answers, the most a user can "
                             "make: a choice is between two answers they were given)")
    parser.add_argument("--requests", type=int, default=20, help="chat requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind, alternated")
    parser.add_argument("--min-tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    lm = bench_model(args)
    folder = Path(tempfile.mkdtemp())
    store = vector_store(lm, folder / "vectors")
    save_profiles(population(8), folder / "profiles.json", "jigsaw-bilstm")
    history(folder / "feedback.sqlite", per_user=MIN_PAIRS - 1)
    print(machine_line(lm))
    app = create_app(lm, vectors=str(store), profiles=str(folder / "profiles.json"),
                     settings=ServerSettings(max_batch=8, batch_window_s=0.01, max_queue=256,
                                             feedback_path=str(folder / "feedback.sqlite"), feedback_rate=50,
                                             feedback_burst=50))
    server, thread, url = serve_in_thread(app)
    run_rate(url, arrivals(50.0, 2, 4, 4, seed=99))  # warm-up
    app.state.server.feedback.settle(timeout=600)  # the history replayed
    chat: dict[str, list] = {"off": [], "on": []}
    acks: list[float] = []
    errors: list[int] = []
    for round_ in range(args.rounds):
        for mode in ("off", "on"):
            plan = arrivals(args.rate, args.requests, args.min_tokens, args.max_tokens, seed=round_)
            stop = threading.Event()
            sender = threading.Thread(target=send_feedback, args=(url, args.feedback_rate, stop, acks, errors, round_))
            if mode == "on":
                sender.start()
            outcomes = run_rate(url, plan)
            stop.set()
            if mode == "on":
                sender.join()
            chat[mode] += outcomes
            app.state.server.feedback.settle(timeout=600)  # no learning left over into the next round
            print(f"  round {round_ + 1} feedback {mode}: {len(outcomes)} answers, "
                  f"p95 latency {quantile([o.done - o.arrived for o in outcomes], 0.95):.2f} s", flush=True)
    app.state.server.feedback.settle()
    service = app.state.server.feedback
    learned = len(app.state.server.served.learned)
    server.should_exit = True
    thread.join(timeout=10)
    rows = []
    for mode in ("off", "on"):
        ttft = [o.first_token - o.arrived for o in chat[mode]]
        latency = [o.done - o.arrived for o in chat[mode]]
        rows.append([mode, str(len(latency)), f"{statistics.median(ttft):.2f} / {quantile(ttft, 0.95):.2f}",
                     f"{statistics.median(latency):.2f} / {quantile(latency, 0.95):.2f}",
                     str(sum(o.status != 200 for o in chat[mode]))])
    print_table(f"chat at {args.rate:g}/s ({args.requests} streamed requests a round, {args.rounds} rounds each), "
                f"feedback at {args.feedback_rate:g}/s in the 'on' rounds",
                ["feedback", "answers", "TTFT p50 / p95 s", "latency p50 / p95 s", "errors"], rows)
    ms = [a * 1000 for a in acks]
    print(f"feedback acknowledged: {len(ms)} events, p50 {statistics.median(ms):.1f} ms, p95 {quantile(ms, 0.95):.1f} ms, "
          f"max {max(ms):.1f} ms; non-200: {len(errors)}; learned from: {service.applied} events; "
          f"users steered by their own choices at the end: {learned} of 8")
    on = [o.done - o.arrived for o in chat["on"]]
    off = [o.done - o.arrived for o in chat["off"]]
    print(f"chat latency with feedback on ÷ off: p50 {statistics.median(on) / statistics.median(off):.3f}, "
          f"p95 {quantile(on, 0.95) / quantile(off, 0.95):.3f}")


if __name__ == "__main__":
    main()
