"""`steer-away serve --replicas 2` against `steer-away serve`, on this machine, loopback only.

Starts the single server, records greedy answers, stops it; starts two Ray Serve replicas with the
same flags, then measures: the same greedy answers from either replica; where each user's requests
land (counts per replica); the real `openai` client, plain and streamed; one replica killed with
SIGKILL mid-load (what the other replica's requests and the killed one's got, and how long until
/health reports both replicas up again, the new one's pid).

    python bench/replicas.py --vectors steer-away-demo/vectors --profiles steer-away-demo/profiles.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from steer_away.server.routing import UserRing

PROMPT = "Give me a blunt opinion on people who are always late."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(flags: list[str], port: int, log: Path, timeout: float = 600) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "steer_away.cli", "serve", "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); see {log}")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            if health.status_code == 200 and health.json().get("status") == "ok":
                return proc
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise SystemExit(f"server did not come up in {timeout} s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def ask(url: str, user: str, max_tokens: int, stream: bool = False) -> httpx.Response:
    body = {"model": "steer-away", "user": user, "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", required=True)
    parser.add_argument("--profiles", required=True)
    parser.add_argument("--users", default="user0000,user0002,user0006,user0007,user0008,user0009",
                        help="users to ask for (the default: six with a vector of their own in the demo)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--log-dir", type=Path, default=Path("."))
    args = parser.parse_args()
    flags = ["--vectors", args.vectors, "--profiles", args.profiles, "--max-batch", "4"]
    users = args.users.split(",")
    ring = UserRing(2)
    home = {u: ring.order(u)[0] for u in users}
    print(f"machine: {os.cpu_count()} CPUs; users and their ring replica: {home}")

    port = free_port()
    single = start(flags, port, args.log_dir / "single.log")
    want = {u: ask(f"http://127.0.0.1:{port}", u, args.max_tokens).json()["choices"][0]["message"]["content"]
            for u in users}
    stop(single)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    served = start([*flags, "--replicas", "2"], port, args.log_dir / "replicas.log")
    print(f"2 replicas up in {time.perf_counter() - started:.0f} s")
    try:
        same = 0
        for u in users:
            got = ask(url, u, args.max_tokens)
            text = got.json()["choices"][0]["message"]["content"]
            same += text == want[u]
            print(f"  {u}: replica {got.headers['x-steer-away-replica']} (ring: {home[u]}), {text[:50]!r}…, "
                  f"{'same answer as steer-away serve' if text == want[u] else 'DIFFERENT: ' + repr(text[:60])}")
        print(f"greedy answers identical to the single server: {same}/{len(users)}")

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda u: (u, ask(url, u, 4)), users * 4))
        counts = {u: Counter(a.headers.get("x-steer-away-replica") for user, a in answers if user == u) for u in users}
        print("requests per replica, by user (4 each, 4 at a time):")
        for u, c in counts.items():
            print(f"  {u}: " + ", ".join(f"replica {r}: {n}" for r, n in sorted(c.items())))

        from openai import OpenAI

        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        whole = client.chat.completions.create(model="steer-away", user=users[0], max_tokens=args.max_tokens,
                                               temperature=0, messages=[{"role": "user", "content": PROMPT}])
        pieces = client.chat.completions.create(model="steer-away", user=users[0], max_tokens=args.max_tokens,
                                                temperature=0, stream=True, messages=[{"role": "user", "content": PROMPT}])
        streamed = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        print(f"openai client: plain answer == single server's: {whole.choices[0].message.content == want[users[0]]}; "
              f"streamed == plain: {streamed == whole.choices[0].message.content}")

        kill_mid_load(url, users, home, args.max_tokens)
    finally:
        stop(served)


def kill_mid_load(url: str, users: list[str], home: dict[str, int], max_tokens: int) -> None:
    victim = httpx.get(f"{url}/health", timeout=30).json()["replicas"][0]["pid"]

    def one(user: str) -> tuple[str, str]:
        try:
            answer = ask(url, user, max_tokens * 3, stream=True)
        except httpx.HTTPError as err:
            return user, f"transport error {type(err).__name__}"
        if answer.status_code == 200 and "data: [DONE]" in answer.text:
            return user, f"finished on replica {answer.headers.get('x-steer-away-replica')}"
        if "failed mid-answer" in answer.text:
            return user, "clear error (replica failed mid-answer)"
        return user, f"status {answer.status_code}: {answer.text[:80]!r}"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, u) for u in users * 2]
        time.sleep(3)
        killed_at = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        outcomes = [f.result() for f in futures]
    print(f"replica 0 (pid {victim}) killed 3 s into {len(outcomes)} streamed requests, 8 at a time:")
    for replica in (0, 1):
        tally = Counter(o for u, o in outcomes if home[u] == replica)
        print(f"  users of replica {replica}: " + "; ".join(f"{n} {what}" for what, n in tally.items()))
    while True:
        health = httpx.get(f"{url}/health", timeout=30).json()
        if health["status"] == "ok" and health["replicas"][0].get("pid") not in (None, victim):
            break
        time.sleep(0.5)
    print(f"both replicas up again {time.perf_counter() - killed_at:.0f} s after the kill "
          f"(replica 0 now pid {health['replicas'][0]['pid']})")
    back = ask(url, next(u for u in users if home[u] == 0), 4)
    print(f"a request of replica 0's user after recovery: {back.status_code}, answered by replica "
          f"{back.headers.get('x-steer-away-replica')}")


if __name__ == "__main__":
    main()
