"""The real server on a loopback port, called with the OpenAI client and with raw HTTP."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from steer_away.errors import InputError
from steer_away.generation import GenerationConfig, generate
from steer_away.profiles import save_profiles
from steer_away.server import ServerSettings, create_app, serve_in_thread
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.vectors.vector import save_bank
from tests.conftest import make_tiny_lm
from tests.server.helpers import PROMPT, TOKEN, expected, post, profile, raw_post, vector


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
    mark = engine.steps_run
    with ThreadPoolExecutor(len(users)) as pool:
        futures = [pool.submit(post, served, {"messages": PROMPT, "user": u, "max_tokens": 8,
                                              "steering": {"alpha": a} if a is not None else None})
                   for u, a in zip(users, alphas)]
        answers = [f.result().json()["choices"][0]["message"]["content"] for f in futures]
    assert answers == [expected(served, u, a) for u, a in zip(users, alphas)]
    assert max(engine.step_sizes_since(mark)) > 1  # they really shared decoding steps


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
                   headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    health = httpx.get(served["url"] + "/health").json()
    assert health["status"] == "ok" and "caa-dislike" in health["methods"] and health["default_method"] == "caa-dislike"


def test_failing_request_does_not_break_its_batch(served, monkeypatch):
    from steer_away.steering.methods import activation

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
        # a malformed profiles file: SIGHUP keeps the server and its previous profiles
        profiles.write_text(json.dumps({"format": "steer-away/profiles@1", "profiles": {"nested": {"x": 1}}}))
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None and httpx.get(url + "/health").json()["users"] == 2
        r = httpx.post(url + "/admin/reload", timeout=30)  # loopback, no key: allowed, and refused with a reason
        assert r.status_code == 400 and "'profiles' must be a list" in r.json()["error"]["message"]
        assert httpx.post(url + "/v1/chat/completions", json={"messages": PROMPT, "max_tokens": 2},
                          timeout=60).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)  # SIGTERM stops it


@pytest.mark.parametrize("content, status, message", [
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "not UTF-8"),
    (b"[" * 1900 + b"]" * 1900, 400, "nested too deeply"),
    (json.dumps({"messages": PROMPT, "seed": 2**70}).encode(), 400, "seed must be in"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "temperature must be a finite"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}', 400, "top_p must be in"),
])
def test_hostile_bodies_get_a_400_not_a_500(served, content, status, message):
    r = raw_post(served["url"], content)
    assert r.status_code == status and message in r.json()["error"]["message"]


def test_body_size_is_enforced_while_reading(served):
    def chunks():  # no Content-Length: the server has to count
        for _ in range(100):
            yield b" " * 1000
    r = raw_post(served["url"], chunks())
    assert r.status_code == 413 and "over the limit of 4000 bytes" in r.json()["error"]["message"]
    # a 500 MB body announced: refused on the header, before any of it is read
    import socket
    from urllib.parse import urlparse

    where = urlparse(served["url"])
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {500 * 2**20}\r\n\r\n{{".encode())
        reply = b""
        while b"524288000" not in reply and len(reply) < 8192:
            piece = sock.recv(4096)
            if not piece:
                break
            reply += piece
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "524288000 bytes; the limit is 4000" in reply


def test_prompt_longer_than_the_limit_is_refused(tokenizer):
    lm = make_tiny_lm("llama", tokenizer)
    app = create_app(lm, settings=ServerSettings(max_prompt_tokens=50, max_request_bytes=200_000))
    server, thread, url = serve_in_thread(app)
    try:
        long = [{"role": "user", "content": "the quick brown fox " * 30}]
        r = httpx.post(url + "/v1/chat/completions", json={"messages": long, "max_tokens": 4}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        assert "the limit is 50" in r.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    # the model's context counts too: the tiny model's 256 positions less max_tokens and a steering reserve
    app = create_app(lm, settings=ServerSettings(max_prompt_tokens=10_000, max_request_bytes=200_000))
    server, thread, url = serve_in_thread(app)
    try:
        long = [{"role": "user", "content": "the quick brown fox " * 60}]
        r = httpx.post(url + "/v1/chat/completions", json={"messages": long, "max_tokens": 100}, timeout=30)
        assert r.status_code == 400 and "the model's context 256" in r.json()["error"]["message"]
        assert "the limit is 92" in r.json()["error"]["message"]  # 256 - 100 - 64
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_admin_reload_is_off_without_a_key_beyond_loopback(tokenizer):
    app = create_app(make_tiny_lm("llama", tokenizer), settings=ServerSettings())  # no key, not marked loopback
    server, thread, url = serve_in_thread(app)
    try:
        r = httpx.post(url + "/admin/reload", timeout=30)
        assert r.status_code == 403 and "--api-key" in r.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_no_deadlock_with_mixed_jobs_at_the_queue_limit(served):
    """The old worker put jobs it could not batch back into its own full queue and blocked for ever."""
    engine = served["app"].state.engine
    old = engine.queue.maxsize
    engine.queue.maxsize = 4
    bodies = [{"messages": PROMPT, "max_tokens": 3,
               "steering": {"method": ["caa-dislike", "eads", "unsteered"][i % 3]},
               "temperature": [0, 0.7][i % 2], "seed": i} for i in range(24)]

    def retrying(body):
        deadline = time.time() + 120
        while time.time() < deadline:
            r = post(served, body)
            if r.status_code != 429:
                return r.status_code
            time.sleep(0.02)
        return 429

    try:
        with ThreadPoolExecutor(24) as pool:
            codes = list(pool.map(retrying, bodies))
    finally:
        engine.queue.maxsize = old
    assert codes == [200] * 24
    assert httpx.get(served["url"] + "/health").json()["status"] == "ok"


def test_seeded_request_samples_the_same_text_whatever_its_batch(served):
    body = {"messages": PROMPT, "max_tokens": 8, "temperature": 1.0, "seed": 1234}
    alone = post(served, body).json()["choices"][0]["message"]["content"]
    others = [{"messages": [{"role": "user", "content": "thank you"}], "max_tokens": 8, "temperature": 1.0,
               "seed": s} for s in (1, 2, 3)]
    engine = served["app"].state.engine
    mark = engine.steps_run
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(post, served, b) for b in [*others, body]]
        texts = [f.result().json()["choices"][0]["message"]["content"] for f in futures]
    assert max(engine.step_sizes_since(mark)) > 1
    assert texts[-1] == alone


def test_short_request_returns_before_its_long_batch_mate(served):
    done_at = {}

    def timed(name, tokens):
        r = post(served, {"messages": PROMPT, "max_tokens": tokens, "user": name})
        done_at[name] = time.perf_counter()
        return r.status_code

    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(timed, ["ann", "bob"], [2, 64]))
    assert codes == [200, 200] and done_at["ann"] < done_at["bob"]


def first_text(lines):
    """Read a stream's lines until decoding has produced some text."""
    for line in lines:
        if line.startswith("data:") and json.loads(line[5:])["choices"][0]["delta"].get("content"):
            return


def test_disconnected_stream_frees_its_row(served, slow_decoding):
    """A stream and a plain request decode together; the stream hangs up: its row is gone at the next
    step while the other request goes on, and answers as if alone."""
    engine = served["app"].state.engine
    before = engine.cancelled_jobs
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(post, served, {"messages": PROMPT, "max_tokens": 40, "user": "ann"})
        body = {"messages": PROMPT, "max_tokens": 64, "stream": True, "user": "bob"}
        with httpx.stream("POST", served["url"] + "/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            first_text(r.iter_lines())
            assert engine.running() == 2
        deadline = time.time() + 30
        while engine.cancelled_jobs == before and time.time() < deadline:
            time.sleep(0.01)
        assert engine.cancelled_jobs > before
        assert not other.done() and engine.running() == 1  # the other request is still decoding, alone
        answer = other.result().json()["choices"][0]["message"]["content"]
    assert answer == expected(served, "ann", tokens=40)
    assert post(served, {"messages": PROMPT, "max_tokens": 2}).status_code == 200


def test_a_request_joins_a_running_batch_and_answers_as_if_alone(served, slow_decoding):
    """While a long stream decodes, a short request arrives: it starts decoding at the next step
    (not when the stream ends), finishes first, and its answer equals the request run alone."""
    engine = served["app"].state.engine
    body = {"messages": PROMPT, "max_tokens": 48, "stream": True, "user": "bob"}
    with httpx.stream("POST", served["url"] + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        lines = r.iter_lines()
        first_text(lines)
        mark = engine.steps_run
        short = post(served, {"messages": PROMPT, "max_tokens": 4, "user": "ann", "steering": {"alpha": 2.0}})
        steps_taken = engine.steps_run - mark
        rest = "".join(json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
                       for line in lines if line.startswith("data:") and line != "data: [DONE]")
    assert short.status_code == 200
    assert short.json()["choices"][0]["message"]["content"] == expected(served, "ann", alpha=2.0, tokens=4)
    assert steps_taken < 20  # answered within a few steps, not after the stream's 48
    assert rest  # the stream was still going when the short request was answered
    assert 2 in engine.step_sizes_since(mark)  # they shared steps


def test_health_reports_a_stalled_worker(served):
    engine = served["app"].state.engine
    real = engine.alive
    try:
        engine.alive = lambda: (True, 10_000.0, 0.0)  # not even polling its queue
        r = httpx.get(served["url"] + "/health")
        assert r.status_code == 503 and r.json()["status"] == "stalled"
        engine.alive = lambda: (True, 30.0, 30.0)  # one long step (a long prefill): work, not a stall
        r = httpx.get(served["url"] + "/health")
        assert r.status_code == 200 and r.json()["status"] == "busy" and r.json()["step_running_s"] == 30.0
        engine.alive = lambda: (True, 10_000.0, 10_000.0)  # a step far past any step's length
        assert httpx.get(served["url"] + "/health").status_code == 503
    finally:
        engine.alive = real
    assert httpx.get(served["url"] + "/health").status_code == 200


def test_client_that_gives_up_on_a_plain_request_is_not_decoded_for(served, slow_decoding):
    engine = served["app"].state.engine
    before = engine.cancelled_jobs
    with pytest.raises(httpx.TimeoutException):
        post_with_timeout = httpx.post(served["url"] + "/v1/chat/completions", timeout=1.0,
                                       json={"messages": PROMPT, "max_tokens": 64},
                                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert post_with_timeout is None
    deadline = time.time() + 30
    while engine.cancelled_jobs == before and time.time() < deadline:
        time.sleep(0.05)
    assert engine.cancelled_jobs > before


def test_a_batch_failing_midway_neither_redoes_answered_rows_nor_repeats_streamed_text(served, monkeypatch):
    """The decode fails as a whole after the short request was answered and the stream got part of its
    text: the answered row is not decoded again; the stream and the plain long request are rerun
    alone, the stream carrying on where it was (its rerun repeats what was sent, which is not sent
    again), and both answer as if alone."""
    from steer_away import internals

    real_step = internals.forward_step
    calls = {"n": 0, "armed": False}

    def failing_step(*args, **kwargs):
        if calls["armed"]:
            calls["n"] += 1
            if calls["n"] == 8:  # prefill + 7 steps: the 2-token row has ended, the others are mid-way
                calls["armed"] = False
                raise RuntimeError("injected failure")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(internals, "forward_step", failing_step)
    engine = served["app"].state.engine
    mark, retried = engine.steps_run, engine.retried_alone

    def streamed_text():
        body = {"messages": PROMPT, "max_tokens": 20, "stream": True, "user": "bob"}
        pieces, error = [], None
        with httpx.stream("POST", served["url"] + "/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and line != "data: [DONE]":
                    event = json.loads(line[5:])
                    if "error" in event:
                        error = event["error"]
                    else:
                        pieces.append(event["choices"][0]["delta"].get("content") or "")
        return "".join(pieces), error

    calls["armed"] = True
    with ThreadPoolExecutor(3) as pool:
        short = pool.submit(post, served, {"messages": PROMPT, "max_tokens": 2, "user": "ann"})
        long = pool.submit(post, served, {"messages": PROMPT, "max_tokens": 20, "user": "ann"})
        stream = pool.submit(streamed_text)
        short_r, long_r, (text, error) = short.result(), long.result(), stream.result()
    assert max(engine.step_sizes_since(mark)) == 3  # all three shared the failing step
    assert short_r.status_code == 200 and short_r.json()["choices"][0]["message"]["content"] == \
        expected(served, "ann", tokens=2)
    assert long_r.status_code == 200 and long_r.json()["choices"][0]["message"]["content"] == \
        expected(served, "ann", tokens=20)
    assert error is None and text.strip() == expected(served, "bob", tokens=20)  # nothing repeated, nothing lost
    assert engine.retried_alone == retried + 2  # the two unanswered requests were rerun


def test_hostile_numbers_get_a_400_or_are_read_as_greedy(served, tokenizer):
    """Issue 26's bugs 2 and 3: a 5000-digit max_tokens, and temperatures so small that sampling overflows."""
    app = create_app(make_tiny_lm("llama", tokenizer), settings=ServerSettings(max_request_bytes=200_000))
    server, thread, url = serve_in_thread(app)
    try:
        body = '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1' + "0" * 5000 + "}"
        reply = httpx.post(url + "/v1/chat/completions", content=body, timeout=60,
                           headers={"Content-Type": "application/json"})
        assert reply.status_code == 400, reply.text[:300]
        assert len(reply.text) < 2000
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    greedy = post(served, {"messages": PROMPT, "max_tokens": 8, "steering": {"method": "unsteered"}}).json()
    for temperature in (1e-300, 1e-40):
        reply = post(served, {"messages": PROMPT, "max_tokens": 8, "temperature": temperature,
                              "steering": {"method": "unsteered"}})
        assert reply.status_code == 200, reply.text[:300]
        assert reply.json()["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]


@pytest.mark.parametrize("setting", ["max_batch", "max_queue", "max_tokens_limit"])
def test_server_settings_that_could_never_run_a_request_are_refused(setting):
    """Issue 26's bug 8: `serve --max-batch 0` was accepted, then no request ever ran."""
    with pytest.raises(InputError, match=f"{setting} must be at least 1"):
        ServerSettings(**{setting: 0})


def test_a_method_whose_scorer_is_missing_is_unavailable_and_the_server_still_starts(tiny_lm, monkeypatch):
    from steer_away.scoring.base import ScorerError
    from steer_away.server.methods import ServedMethods
    from steer_away.steering.framework import resources as resources_module

    def missing(name):
        raise ScorerError("the offline scorer needs 'toxic-comment-classifier'")

    monkeypatch.setattr(resources_module, "make_scorer", missing)
    served = ServedMethods(tiny_lm, None, None, None, None)
    assert {"rerank", "guided"} <= set(served.unavailable) and "toxic-comment-classifier" in served.unavailable["rerank"]
    assert {"unsteered", "profile-prompt", "eads"} <= set(served.methods)


def test_a_user_id_with_newlines_cannot_forge_a_server_log_line(caplog):
    """Issue 26, bug 5: the id is logged as its repr, so its newlines stay escaped on one line."""
    import logging

    from steer_away.server.errors import as_api_error

    forged = "u1\n2026-11-30 INFO steer_away.server admin logged in"
    with caplog.at_level(logging.ERROR, logger="steer_away.server"):
        assert as_api_error(RuntimeError("boom"), forged).status == 500
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and repr(forged) in record.getMessage()
