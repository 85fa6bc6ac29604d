"""kill -9 of a server in the middle of a flood of feedback: every event it acknowledged is in the store."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from steer_away.profiles import save_profiles
from steer_away.server.feedback_store import FeedbackStore
from tests.server.helpers import free_port, profile

pytestmark = pytest.mark.slow
KEY = "durability-key"



def test_a_killed_server_keeps_every_acknowledged_choice(tiny_model_dir, tmp_path):
    people = {u: profile(u, s) for u, s in [("ann", "strict"), ("bob", "tolerant")]}
    save_profiles(people, tmp_path / "profiles.json", "jigsaw-bilstm")
    port, db = free_port(), tmp_path / "feedback.sqlite"
    server = subprocess.Popen([sys.executable, "-m", "steer_away.cli", "serve", "--model", str(tiny_model_dir),
                               "--device", "cpu", "--profiles", str(tmp_path / "profiles.json"), "--feedback", str(db),
                               "--port", str(port), "--api-key", KEY], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("server did not start")
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def flood(worker: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as client:
            for i in range(100_000):
                if stop.is_set():
                    return
                event = f"w{worker}-{i}"
                body = {"id": event, "user": f"user-{worker}-{i // 10}", "chosen": {"text": f"kind words {i}"},
                        "rejected": [{"text": f"rude words {i}"}]}
                try:
                    answer = client.post(url + "/v1/feedback", json=body)
                except httpx.HTTPError:
                    return  # the server is gone
                if answer.status_code == 200 and answer.json()["status"] == "recorded":
                    with lock:
                        acknowledged.append(event)

    threads = [threading.Thread(target=flood, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < 150 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) >= 150
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = FeedbackStore(db)
    kept = {c.event_id for c in store.events()}
    store.close()
    assert set(acknowledged) <= kept, f"{len(set(acknowledged) - kept)} acknowledged events lost"
