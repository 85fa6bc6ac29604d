"""Background work on the decoding thread (how feedback reads activations): run in an idle moment, its
result or its exception handed back, and never while a request is decoding unless it waited too long."""

import time

import pytest

from steer_away.server import engine as engine_module
from tests.server.helpers import PROMPT, post


def test_a_chore_runs_on_the_idle_worker_and_hands_back_its_result_or_error(served):
    engine = served["app"].state.engine
    assert engine.between_steps(lambda: 6 * 7).result(timeout=10) == 42

    def broken():
        raise ValueError("chore failed")

    with pytest.raises(ValueError, match="chore failed"):
        engine.between_steps(broken).result(timeout=10)


def test_a_chore_waits_for_the_running_requests_unless_it_has_waited_too_long(served, slow_decoding, monkeypatch):
    import threading

    engine = served["app"].state.engine
    ran_while: list[int] = []
    answer: list = []
    thread = threading.Thread(target=lambda: answer.append(post(served, {"messages": PROMPT, "max_tokens": 24})))
    thread.start()
    while engine.running() == 0:
        time.sleep(0.01)
    future = engine.between_steps(lambda: ran_while.append(engine.running()))
    future.result(timeout=30)
    thread.join()
    assert answer[0].status_code == 200 and ran_while == [0]  # it waited for the answer to finish

    monkeypatch.setattr(engine_module, "CHORE_MAX_WAIT_S", 0.0)  # a chore that has waited its limit goes first
    thread = threading.Thread(target=lambda: answer.append(post(served, {"messages": PROMPT, "max_tokens": 24})))
    thread.start()
    while engine.running() == 0:
        time.sleep(0.01)
    engine.between_steps(lambda: ran_while.append(engine.running())).result(timeout=30)
    thread.join()
    assert ran_while[1] == 1
