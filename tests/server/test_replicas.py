"""Two Ray Serve replicas of the tiny random model behind the user router (Ray started here, local):
the single server's answers, a user kept on one replica, the openai client, and a replica killed."""

import concurrent.futures
import json
import os
import signal
import time

import httpx
import pytest

from steer_away.models import load_model
from steer_away.server import ServerSettings, create_app
from steer_away.server.routing import UserRing
from tests.server.helpers import free_port

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow

KEY = "replica-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}



@pytest.fixture(scope="module")
def settings():
    return ServerSettings(api_key=KEY, max_batch=4)


@pytest.fixture(scope="module")
def endpoint(tiny_model_dir, settings):
    from steer_away.server.replicas import ReplicaSpec, build_app

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(ReplicaSpec(str(tiny_model_dir), "cpu", settings=settings), 2), name="t", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def single(tiny_model_dir, settings):
    """The single-process server's app, for the answers the replicas must give."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(load_model(str(tiny_model_dir), device="cpu"), settings=settings)) as client:
        yield client


def users_of(replica: int, n: int) -> list[str]:
    ring = UserRing(2)
    return [u for u in (f"user-{i}" for i in range(200)) if ring.order(u)[0] == replica][:n]


def ask(url, user, content="Tell me about rivers.", max_tokens=10, **extra):
    body = {"model": "steer-away", "user": user, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=120)


def test_either_replica_gives_the_single_server_s_greedy_answer(endpoint, single):
    for replica in (0, 1):
        user = users_of(replica, 1)[0]
        got = ask(endpoint, user)
        assert got.status_code == 200, got.text
        assert got.headers["x-steer-away-replica"] == str(replica)
        want = single.post("/v1/chat/completions", headers=AUTH, json={
            "model": "steer-away", "user": user, "messages": [{"role": "user", "content": "Tell me about rivers."}],
            "max_tokens": 10, "temperature": 0})
        assert got.json()["choices"][0]["message"]["content"] == want.json()["choices"][0]["message"]["content"]
        assert got.json()["usage"] == want.json()["usage"]


def test_a_user_s_requests_land_on_one_replica(endpoint):
    users = users_of(0, 2) + users_of(1, 2)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda u: (u, ask(endpoint, u, max_tokens=3)), users * 3))
    where: dict[str, set[str]] = {}
    for user, answer in answers:
        assert answer.status_code == 200
        where.setdefault(user, set()).add(answer.headers["x-steer-away-replica"])
    assert all(len(replicas) == 1 for replicas in where.values()), where
    assert {r for rs in where.values() for r in rs} == {"0", "1"}


def test_the_same_key_handling_and_errors_as_the_single_server(endpoint, single):
    refused = httpx.post(f"{endpoint}/v1/chat/completions", json={"messages": []}, timeout=30)
    assert refused.status_code == 401 and refused.json() == single.post("/v1/chat/completions",
                                                                          json={"messages": []}).json()
    bad = ask(endpoint, "someone", max_tokens=0)
    assert bad.status_code == 400 and bad.json() == single.post("/v1/chat/completions", headers=AUTH, json={
        "model": "steer-away", "user": "someone", "messages": [{"role": "user", "content": "Tell me about rivers."}],
        "max_tokens": 0, "temperature": 0}).json()


def test_the_openai_client_streams_and_answers_through_the_replicas(endpoint):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{endpoint}/v1", api_key=KEY)
    whole = client.chat.completions.create(model="steer-away", user="u1", max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Hello"}])
    pieces = client.chat.completions.create(model="steer-away", user="u1", max_tokens=8, temperature=0, stream=True,
                                            messages=[{"role": "user", "content": "Hello"}])
    streamed = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    assert whole.choices[0].message.content and streamed == whole.choices[0].message.content


def test_health_is_every_replica_s(endpoint):
    health = httpx.get(f"{endpoint}/health", timeout=30)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and [r["replica"] for r in body["replicas"]] == [0, 1]
    assert len({r["pid"] for r in body["replicas"]}) == 2 and all(r["worker_alive"] for r in body["replicas"])


def test_a_killed_replica_fails_only_its_own_requests_and_comes_back(endpoint):
    health = httpx.get(f"{endpoint}/health", timeout=30).json()
    victim = health["replicas"][0]["pid"]
    home, other = users_of(0, 4), users_of(1, 4)

    def one(user):
        try:
            answer = ask(endpoint, user, content="Write a long story about the sea.", max_tokens=120, stream=True)
        except httpx.HTTPError as err:
            return user, None, repr(err)
        return user, answer.status_code, answer.text

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, u) for u in (home + other) * 2]
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        outcomes = [f.result(timeout=180) for f in futures]
    for user, status, text in outcomes:
        finished = status == 200 and "data: [DONE]" in text
        if user in other:
            assert finished, (status, text[-300:])  # the other replica's users are untouched
        else:  # finished (retried elsewhere before any byte, or done before the kill) or a clear error
            assert finished or "failed mid-answer" in text or status in (502, 503), (status, text[-300:])
    deadline = time.time() + 120
    while time.time() < deadline:  # Ray replaces the replica; the router probes it back in
        now = httpx.get(f"{endpoint}/health", timeout=30).json()
        if now["status"] == "ok" and now["replicas"][0]["pid"] != victim:
            break
        time.sleep(1)
    else:
        pytest.fail(f"replica 0 did not come back: {json.dumps(now)[:500]}")
    back = ask(endpoint, home[0])
    assert back.status_code == 200
    assert back.headers["x-steer-away-replica"] == "0"  # the user is home again (a healthy /health clears the mark)
