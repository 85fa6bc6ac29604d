"""The real server on a loopback port, called with the OpenAI client and with raw HTTP."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from steer_away.generation import GenerationConfig, generate
from steer_away.profiles import save_profiles
from steer_away.profiles.build import UserProfile
from steer_away.server import ServerSettings, create_app, serve_in_thread
from steer_away.steering.activation import ActivationSteering
from steer_away.steering.base import RowSteering
from steer_away.steering.vectors import SteeringVector, save_bank
from tests.conftest import make_tiny_lm

TOKEN = "test-token"
PROMPT = [{"role": "user", "content": "the quick brown fox"}]


def vector(seed):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({l: torch.randn(32, generator=g) * 3 for l in (1, 2)}, "tiny-random-llama", 32, 4)


def profile(user, sensitivity):
    return UserProfile(user, ["TOXICITY"], [0.1], [0.2], 0.1, None, sensitivity, [0.0], 1, 1)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("serve")
    lm = make_tiny_lm("llama", tokenizer)
    save_bank(folder / "vectors", vector(0), {"ann": vector(1), "bob": vector(2)})
    save_profiles({"ann": profile("ann", "strict"), "bob": profile("bob", "tolerant")}, folder / "profiles.json", "t")
    settings = ServerSettings(api_key=TOKEN, max_batch=8, batch_window_s=0.2, max_tokens_limit=64,
                              max_messages=4, max_request_bytes=4000, alpha_limit=10)
    app = create_app(lm, profiles=str(folder / "profiles.json"), vectors=str(folder / "vectors"), settings=settings)
    server, thread, url = serve_in_thread(app)
    yield {"url": url, "lm": lm, "app": app, "folder": folder}
    server.should_exit = True
    thread.join(timeout=10)


def post(served, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(served["url"] + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def expected(served, user, alpha=None, tokens=8):
    method = ActivationSteering({"ann": vector(1), "bob": vector(2)}, alpha=0.5, default=vector(0))
    return generate(served["lm"], [PROMPT], method=method, rows=[RowSteering(user, alpha)],
                    config=GenerationConfig(max_new_tokens=tokens))[0].text


def test_openai_client_and_steering_differs(served):
    from openai import OpenAI

    client = OpenAI(base_url=served["url"] + "/v1", api_key=TOKEN)
    assert [m.id for m in client.models.list().data] == ["steer-away"]
    steered = client.chat.completions.create(model="steer-away", messages=PROMPT, user="ann", max_tokens=8)
    plain = client.chat.completions.create(model="steer-away", messages=PROMPT, user="ann", max_tokens=8,
                                           extra_body={"steering": {"method": "unsteered"}})
    assert steered.choices[0].message.content == expected(served, "ann")
    assert plain.choices[0].message.content != steered.choices[0].message.content
    assert steered.usage.completion_tokens <= 8


def test_stream_matches_non_stream(served):
    from openai import OpenAI

    client = OpenAI(base_url=served["url"] + "/v1", api_key=TOKEN)
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="steer-away", messages=PROMPT, user="bob", max_tokens=8, stream=True)]
    assert "".join(pieces).strip() == expected(served, "bob")


def test_concurrent_users_each_get_their_own_steering(served):
    users = ["ann", "bob", "stranger", "ann", "bob", "stranger"]
    alphas = [None, None, None, 2.0, -1.0, 0.0]
    engine = served["app"].state.engine
    before = engine.batches_run
    with ThreadPoolExecutor(len(users)) as pool:
        futures = [pool.submit(post, served, {"messages": PROMPT, "user": u, "max_tokens": 8,
                                              "steering": {"alpha": a} if a is not None else None})
                   for u, a in zip(users, alphas)]
        answers = [f.result().json()["choices"][0]["message"]["content"] for f in futures]
    assert answers == [expected(served, u, a) for u, a in zip(users, alphas)]
    assert max(engine.batch_sizes[before:]) > 1  # they really were batched together


def test_logit_steering_by_category(served):
    body = {"messages": PROMPT, "user": "ann", "max_tokens": 8, "steering": {"method": "eads", "alpha": 3.0}}
    r = post(served, body)
    assert r.status_code == 200 and r.json()["steering"]["method"] == "eads"
    body["steering"]["category"] = "tolerant"
    assert post(served, body).status_code == 200


@pytest.mark.parametrize("body, token, status, param", [
    ({"messages": PROMPT}, None, 401, None),
    ({"messages": PROMPT}, "wrong", 401, None),
    ({"messages": []}, TOKEN, 400, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, TOKEN, 400, "messages.0.role"),
    ({"messages": PROMPT * 5}, TOKEN, 400, "messages"),
    ({"messages": PROMPT, "max_tokens": 1000}, TOKEN, 400, "max_tokens"),
    ({"messages": PROMPT, "max_tokens": 0}, TOKEN, 400, "max_tokens"),
    ({"messages": PROMPT, "steering": {"alpha": 1e6}}, TOKEN, 400, "steering.alpha"),
    ({"messages": PROMPT, "steering": {"method": "magic"}}, TOKEN, 400, "steering.method"),
    ({"messages": PROMPT, "steering": {"method": "eads", "category": "nope"}}, TOKEN, 400, "steering.category"),
    ({"messages": PROMPT, "model": "gpt-4"}, TOKEN, 404, "model"),
    ({"messages": PROMPT, "n": 2}, TOKEN, 400, "n"),
    ({"messages": [{"role": "user", "content": "x" * 5000}]}, TOKEN, 413, None),
])
def test_bad_requests_get_documented_status(served, body, token, status, param):
    r = post(served, body, token)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["param"] == param and error["message"]


def test_invalid_json_and_health(served):
    r = httpx.post(served["url"] + "/v1/chat/completions", content=b"{oops",
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    health = httpx.get(served["url"] + "/health").json()
    assert health["status"] == "ok" and "caa-dislike" in health["methods"] and health["default_method"] == "caa-dislike"


def test_failing_request_does_not_break_its_batch(served, monkeypatch):
    from steer_away.steering import activation

    original = activation.ActivationSteering.prepare

    def fragile(self, lm, conversations, rows):
        if any(r.user_id == "poison" for r in rows):
            raise RuntimeError("poisoned row")
        return original(self, lm, conversations, rows)

    monkeypatch.setattr(activation.ActivationSteering, "prepare", fragile)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(post, served, {"messages": PROMPT, "user": u, "max_tokens": 8})
                   for u in ("ann", "poison", "bob")]
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200, 500, 200]
    assert responses[0].json()["choices"][0]["message"]["content"] == expected(served, "ann")
    assert httpx.get(served["url"] + "/health").status_code == 200


def test_reload_picks_up_new_vectors_without_dropping_requests(served):
    folder = served["folder"]
    save_bank(folder / "vectors", vector(0), {"ann": vector(1), "bob": vector(2), "cy": vector(3)})
    with ThreadPoolExecutor(4) as pool:
        inflight = [pool.submit(post, served, {"messages": PROMPT, "user": "bob", "max_tokens": 8}) for _ in range(3)]
        reload = httpx.post(served["url"] + "/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert reload.status_code == 200
        assert all(f.result().status_code == 200 for f in inflight)
    cy = post(served, {"messages": PROMPT, "user": "cy", "max_tokens": 8}).json()["choices"][0]["message"]["content"]
    method = ActivationSteering({"cy": vector(3)}, alpha=0.5, default=vector(0))
    assert cy == generate(served["lm"], [PROMPT], method=method, rows=[RowSteering("cy")],
                          config=GenerationConfig(max_new_tokens=8))[0].text
    assert httpx.post(served["url"] + "/admin/reload").status_code == 401


def test_serve_cli_reloads_on_sighup(tiny_model_dir, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    bank = tmp_path / "vectors"
    population = vector(0)
    population.model_id = str(tiny_model_dir)
    save_bank(bank, population, {})
    profiles = tmp_path / "profiles.json"
    save_profiles({"ann": profile("ann", "strict")}, profiles, "t")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "steer_away.cli", "serve", "--model", str(tiny_model_dir),
                             "--device", "cpu", "--profiles", str(profiles), "--vectors", str(bank),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        health = None
        while time.time() < deadline:
            try:
                health = httpx.get(url + "/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health is not None and health["users"] == 1
        save_profiles({"ann": profile("ann", "strict"), "bob": profile("bob", "tolerant")}, profiles, "t")
        os.kill(proc.pid, signal.SIGHUP)
        while time.time() < deadline:
            if httpx.get(url + "/health", timeout=2).json()["users"] == 2:
                break
            time.sleep(0.1)
        assert httpx.get(url + "/health").json()["users"] == 2
        r = httpx.post(url + "/v1/chat/completions", json={"messages": PROMPT, "user": "bob", "max_tokens": 4},
                       timeout=60)
        assert r.status_code == 200 and proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
