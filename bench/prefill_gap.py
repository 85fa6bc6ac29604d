"""How long a running stream freezes while long prompts join it, with and without chunked prefill.

A stream is decoding on the real server (loopback) when three EADS requests with prompts of about
2000 tokens arrive (each is three branch rows: nine rows to prefill). With `--prefill-chunk off`
each group of joiners is prefilled in one pass, and the stream waits for it; with a chunk, each
step prefills about that many prompt tokens and also decodes the stream one token. For each
setting it prints the stream's longest gap between two pieces of text while the joiners were
being prefilled, how long the joiners took to their first token, what /health answered meanwhile
(polled every 0.5 s: a 503 would make an orchestrator restart a healthy server), and whether every
answer (the stream's and the three long ones, all greedy) is identical to the same request sent
alone. Both settings run in one process, so their ratio is measured on one machine in one run.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, print_table
from steer_away.models import load_model
from steer_away.server import ServerSettings, create_app, serve_in_thread

STREAM_PROMPT = "Count from 1 to 300, writing each number as a word, one per line."
TOPICS = ["rivers", "mountains", "libraries"]


def long_prompt(lm: object, topic: str, tokens: int) -> str:
    """A prompt of about `tokens` tokens: a long, plain text about one topic and a question on it."""
    sentence = f"This is a long note about {topic}, written to fill the context with ordinary text. "
    per = len(lm.tokenizer(sentence)["input_ids"])  # type: ignore[attr-defined]
    return sentence * max(1, tokens // per) + "In one sentence, what is this note about?"


def stream(url: str, body: dict[str, object], times: list[float], pieces: list[str], started: threading.Event) -> None:
    with httpx.stream("POST", url + "/v1/chat/completions", json=body | {"stream": True}, timeout=900) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and line != "data: [DONE]":
                content = json.loads(line[5:])["choices"][0]["delta"].get("content")
                if content:
                    times.append(time.perf_counter())
                    pieces.append(content)
                    if len(pieces) >= 5:
                        started.set()
    started.set()


def answer(url: str, body: dict[str, object], out: dict[str, object], key: str) -> None:
    reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=900)
    out[key] = (reply.json()["choices"][0]["message"]["content"], time.perf_counter())


def poll_health(url: str, stop: threading.Event, seen: list[tuple[int, str]]) -> None:
    while not stop.wait(0.5):
        r = httpx.get(url + "/health", timeout=30)
        seen.append((r.status_code, r.json()["status"]))


def scenario(lm: object, chunk: int | None, prompts: list[str], stream_tokens: int, long_tokens: int) -> dict[str, object]:
    settings = ServerSettings(max_batch=8, max_tokens_limit=512, prefill_chunk=chunk, max_request_bytes=200_000)
    app = create_app(lm, settings=settings)  # type: ignore[arg-type]
    server, thread, url = serve_in_thread(app)
    try:
        stream_body = {"messages": [{"role": "user", "content": STREAM_PROMPT}], "max_tokens": stream_tokens,
                       "steering": {"method": "unsteered"}}
        long_bodies = [{"messages": [{"role": "user", "content": p}], "max_tokens": long_tokens,
                        "steering": {"method": "eads"}} for p in prompts]
        times: list[float] = []
        pieces: list[str] = []
        started = threading.Event()
        answers: dict[str, object] = {}
        health: list[tuple[int, str]] = []
        stop = threading.Event()
        watcher = threading.Thread(target=poll_health, args=(url, stop, health), daemon=True)
        streamer = threading.Thread(target=stream, args=(url, stream_body, times, pieces, started))
        streamer.start()
        started.wait()
        watcher.start()
        joined_at = time.perf_counter()
        longs = [threading.Thread(target=answer, args=(url, body, answers, f"long{i}"))
                 for i, body in enumerate(long_bodies)]
        for t in longs:
            t.start()
        for t in longs:
            t.join()
        streamer.join()
        stop.set()
        watcher.join()
        first_done = min(float(answers[f"long{i}"][1]) for i in range(len(prompts)))  # type: ignore[index]
        window = [t for t in times if t >= joined_at]
        gaps = [b - a for a, b in zip([joined_at, *window], window)]
        covered = bool(window) and window[-1] >= first_done
        together = {"stream": "".join(pieces).strip(),
                    **{f"long{i}": answers[f"long{i}"][0] for i in range(len(prompts))}}  # type: ignore[index]
        alone = {}
        for key, body in [("stream", stream_body), *[(f"long{i}", b) for i, b in enumerate(long_bodies)]]:
            out: dict[str, object] = {}
            answer(url, body, out, key)
            alone[key] = out[key][0]  # type: ignore[index]
        return {"longest gap": max(gaps) if gaps else float("nan"), "covered": covered,
                "prefill seconds": max(float(answers[f"long{i}"][1]) for i in range(len(prompts))) - joined_at,
                "health": sorted(set(health)), "identical": sum(together[k] == alone[k] for k in alone),
                "answers": len(alone), "steps": app.state.engine.steps_run}
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt-tokens", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=512, help="the chunked setting (prompt tokens per step)")
    parser.add_argument("--stream-tokens", type=int, default=512)
    parser.add_argument("--long-tokens", type=int, default=8)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    lm = load_model(args.model, device=args.device)
    print(machine_line(lm))
    prompts = [long_prompt(lm, topic, args.prompt_tokens) for topic in TOPICS]
    sizes = [len(lm.tokenizer(p)["input_ids"]) for p in prompts]
    print(f"three EADS requests of {min(sizes)}-{max(sizes)} prompt tokens join a running stream")
    results = {label: scenario(lm, chunk, prompts, args.stream_tokens, args.long_tokens)
               for label, chunk in (("off (one pass)", None), (f"{args.chunk} tokens a step", args.chunk))}
    rows = [[label, f"{r['longest gap']:.1f}", "yes" if r["covered"] else "no (stream ended first)",
             f"{r['prefill seconds']:.1f}", ", ".join(f"{c} {s}" for c, s in r["health"]),  # type: ignore[attr-defined]
             f"{r['identical']} of {r['answers']}"] for label, r in results.items()]
    print_table("a stream while three long prompts join", ["prefill", "longest gap (s)", "stream outlasted prefill",
                                                           "joiners done after (s)", "/health answers",
                                                           "identical to alone"], rows)
    off, on = results["off (one pass)"], results[f"{args.chunk} tokens a step"]
    print(f"\nlongest gap, chunked ÷ one pass: {float(on['longest gap']) / float(off['longest gap']):.3f}")  # type: ignore[arg-type]
    ok = all(r["identical"] == r["answers"] and all(c == 200 for c, _ in r["health"])  # type: ignore[attr-defined]
             for r in results.values())
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
