"""The Perspective client against a local fake server that misbehaves on purpose."""

import json
import os
import subprocess
import sys
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from steer_away.scoring.base import ScorerError
from steer_away.scoring.cache import CachedScorer, ScoreCache
from steer_away.scoring.perspective import (
    END_OF_SERVICE,
    PerspectiveEndOfServiceWarning,
    PerspectiveScorer,
    end_of_service_notice,
)

KEY = "secret-test-key-123"
# every test here builds a scorer, so every one would print the end-of-service notice; two tests check it
pytestmark = pytest.mark.filterwarnings("ignore::steer_away.scoring.perspective.PerspectiveEndOfServiceWarning")


class FakePerspective(BaseHTTPRequestHandler):
    script: ClassVar[list[str]] = []  # what to do for each request, in order; then "ok"
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakePerspective.seen.append({"body": body, "key": self.headers.get("X-Goog-Api-Key"), "path": self.path})
        action = FakePerspective.script.pop(0) if FakePerspective.script else "ok"
        if action in ("429", "429-day"):
            self.send_response(429)
            self.send_header("Retry-After", "0" if action == "429" else "86400")
            self.end_headers()
            return
        if action == "400-echo":  # an endpoint that echoes the request headers in its error
            self.send_response(400)
            self.end_headers()
            self.wfile.write(f"bad request; you sent X-Goog-Api-Key: {self.headers.get('X-Goog-Api-Key')}".encode())
            return
        if action == "500":
            self.send_response(500)
            self.end_headers()
            return
        if action == "400":
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b"bad request")
            return
        if action == "slow":
            threading.Event().wait(0.5)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if action == "garbage":
            self.wfile.write(b"<html>not json")
            return
        if action == "wrong-shape":
            self.wfile.write(json.dumps({"attributeScores": {}}).encode())
            return
        text = body["comment"]["text"]
        value = min(1.0, len(text) / 100)
        scores = {a: {"summaryScore": {"value": value, "type": "PROBABILITY"}} for a in body["requestedAttributes"]}
        self.wfile.write(json.dumps({"attributeScores": scores}).encode())


@pytest.fixture()
def server():
    FakePerspective.script, FakePerspective.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakePerspective)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1alpha1/comments:analyze"
    httpd.shutdown()


def make(url, **kw):
    sleeps = []
    scorer = PerspectiveScorer(api_key=KEY, url=url, qps=1000, sleep=sleeps.append, backoff_s=0.01, **kw)
    return scorer, sleeps


def test_request_shape_and_key_in_header(server):
    scorer, _ = make(server, attributes=("TOXICITY", "INSULT"))
    out = scorer.score(["x" * 30])
    np.testing.assert_allclose(out, [[0.3, 0.3]])
    sent = FakePerspective.seen[0]
    assert sent["key"] == KEY and KEY not in sent["path"]
    assert sent["body"]["doNotStore"] is True
    assert set(sent["body"]["requestedAttributes"]) == {"TOXICITY", "INSULT"}
    assert KEY not in repr(scorer)


def test_retries_429_500_and_garbage_then_succeeds(server):
    FakePerspective.script = ["429", "500", "garbage", "wrong-shape"]
    scorer, sleeps = make(server)
    out = scorer.score(["y" * 50])
    assert out[0, 0] == pytest.approx(0.5)
    assert scorer.requests_sent == 5
    assert len([s for s in sleeps if s > 0]) >= 4  # backed off between attempts


def test_timeout_is_retried(server):
    FakePerspective.script = ["slow"]
    scorer, _ = make(server, timeout_s=0.1)
    assert scorer.score(["z"])[0, 0] == pytest.approx(0.01)
    assert scorer.requests_sent == 2


def test_gives_up_with_a_clear_error_and_keeps_finished_scores(server, tmp_path):
    scorer, _ = make(server, max_retries=2)
    cached = CachedScorer(scorer, ScoreCache(tmp_path / "s.sqlite"), batch_size=scorer.preferred_batch_size)
    FakePerspective.script = ["ok", "500", "500", "500"]
    with pytest.raises(ScorerError, match="after 3 attempts; last problem: HTTP 500"):
        cached.score(["first text", "second text"])
    # the first score was paid for and committed; a rerun asks only for the second
    FakePerspective.seen.clear()
    again = CachedScorer(make(server)[0], ScoreCache(tmp_path / "s.sqlite"))
    again.score(["first text", "second text"])
    assert [s["body"]["comment"]["text"] for s in FakePerspective.seen] == ["second text"]


def test_client_errors_are_not_retried(server):
    FakePerspective.script = ["400"]
    scorer, _ = make(server)
    with pytest.raises(ScorerError, match="HTTP 400"):
        scorer.score(["x"])
    assert scorer.requests_sent == 1


def test_key_required(monkeypatch):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(ScorerError, match="PERSPECTIVE_API_KEY"):
        PerspectiveScorer()


def test_qps_spacing(server):
    scorer = PerspectiveScorer(api_key=KEY, url=server, qps=20)
    import time

    start = time.monotonic()
    scorer.score(["a", "b", "c", "d"])
    assert time.monotonic() - start >= 3 / 20 * 0.9


def test_qps_from_environment(monkeypatch):
    monkeypatch.setenv("PERSPECTIVE_QPS", "4")
    assert PerspectiveScorer(api_key=KEY).min_interval == pytest.approx(0.25)
    monkeypatch.setenv("PERSPECTIVE_QPS", "fast")
    with pytest.raises(ScorerError, match="PERSPECTIVE_QPS"):
        PerspectiveScorer(api_key=KEY)


def test_a_day_long_retry_after_stops_instead_of_sleeping(server):
    FakePerspective.script = ["429-day"]
    scorer, sleeps = make(server)
    with pytest.raises(ScorerError, match="retry after 86400 s"):
        scorer.score(["x"])
    assert scorer.requests_sent == 1 and not any(s > 60 for s in sleeps)


def test_key_never_shows(server):
    FakePerspective.script = ["400-echo"]
    scorer, _ = make(server)
    with pytest.raises(ScorerError) as caught:
        scorer.score(["x"])
    assert "X-Goog-Api-Key: ***" in str(caught.value) and KEY not in str(caught.value)
    assert KEY not in repr(vars(scorer)) and KEY not in repr(scorer)


def test_creating_the_scorer_warns_that_the_service_ends_with_the_date():
    with pytest.warns(PerspectiveEndOfServiceWarning, match="2026-12-31") as caught:
        PerspectiveScorer(api_key=KEY)
    assert str(caught[0].message) == end_of_service_notice(date.today())


def test_the_notice_counts_down_then_says_the_service_has_ended():
    before = end_of_service_notice(date(2026, 11, 30))
    assert "after 2026-12-31 (31 days from today, 2026-11-30) requests fail" in before
    assert "February 2026" in before and "hf:<model> is the maintained replacement" in before
    assert "ended" not in before and "ended" not in end_of_service_notice(END_OF_SERVICE)
    after = end_of_service_notice(date(2027, 1, 1))
    assert "service ended on 2026-12-31" in after and "requests to it fail" in after and "hf:<model>" in after


def test_python_shows_the_warning_without_any_set_up(tmp_path):
    """A fresh interpreter with Python's default filters, as the command line runs: the notice is printed."""
    code = ("from steer_away.scoring import make_scorer; "
            f"make_scorer('perspective', cache_path={str(tmp_path / 's.sqlite')!r})")
    env = {**os.environ, "PERSPECTIVE_API_KEY": KEY}
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "PerspectiveEndOfServiceWarning: Perspective API" in done.stderr and "2026-12-31" in done.stderr
