"""The load generator's client side, shared by the load benchmarks: seeded Poisson arrivals of
streamed chat requests sent over loopback, each timed from its arrival. Uses no steer-away code, so
the same client can drive any version of the server."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass

import httpx

from common import PROMPTS


@dataclass
class Arrival:
    at: float  # seconds after the start of the run
    prompt: str
    user: str
    tokens: int


@dataclass
class Outcome:
    arrived: float
    first_token: float
    done: float
    status: int


def arrivals(rate: float, count: int, min_tokens: int, max_tokens: int, seed: int) -> list[Arrival]:
    rng = random.Random(seed)
    now, out = 0.0, []
    for _ in range(count):
        now += rng.expovariate(rate)
        out.append(Arrival(now, PROMPTS[rng.randrange(len(PROMPTS))], f"u{rng.randrange(8)}",
                           rng.randint(min_tokens, max_tokens)))
    return out


def stream_one(url: str, arrival: Arrival, start: float) -> Outcome:
    time.sleep(max(0.0, start + arrival.at - time.perf_counter()))
    sent = time.perf_counter()
    first: float | None = None
    body = {"messages": [{"role": "user", "content": arrival.prompt}], "user": arrival.user,
            "max_tokens": arrival.tokens, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=900) as r:
        for line in r.iter_lines():
            if first is None and line.startswith("data:") and line != "data: [DONE]":
                delta = json.loads(line[5:]).get("choices", [{}])[0].get("delta", {})
                if delta.get("content"):
                    first = time.perf_counter()
        status = r.status_code
    end = time.perf_counter()
    return Outcome(sent, first if first is not None else end, end, status)


def run_rate(url: str, plan: list[Arrival]) -> list[Outcome]:
    results: list[Outcome | None] = [None] * len(plan)
    start = time.perf_counter() + 0.2

    def worker(i: int) -> None:
        results[i] = stream_one(url, plan[i], start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(plan))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
