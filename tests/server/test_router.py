"""The ingress's decisions with fake replicas (no Ray, no model): routing by user, a replica failing
before or during an answer, the down mark and what clears it, health and admin fan-out."""

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from steer_away.server.asgi import Part
from steer_away.server.router import REPLICA_HEADER, UserRouter
from steer_away.server.routing import UserRing


class Call:
    def __init__(self, result):
        self.result = result

    def __await__(self):
        async def value():
            if isinstance(self.result, Exception):
                raise self.result
            return self.result
        return value().__await__()


class FakeReplica:
    """Answers like a replica: a JSON body, or an event stream; `fail` says how it breaks."""

    def __init__(self, index: int) -> None:
        self.index, self.fail, self.seen = index, None, []
        self.pid = self  # `engine.pid.remote()`
        self.forward = self  # `engine.options(stream=True).forward.remote(request)`

    def options(self, **_):
        return self

    def remote(self, request=None):
        if request is None:
            return Call(ConnectionError("gone") if self.fail == "dead" else 1000 + self.index)
        self.seen.append(request.path)
        return self._parts(request)

    async def _parts(self, request):
        if self.fail in ("dead", "before"):
            raise ConnectionError("replica process gone")
        if request.path == "/health":
            yield Part(200, ((b"content-type", b"application/json"),))
            yield Part(body=json.dumps({"status": "ok"}).encode(), last=True)
            return
        body = json.loads(request.body or b"{}")
        if body.get("stream"):
            yield Part(200, ((b"content-type", b"text/event-stream"),))
            yield Part(body=b"data: first\n\n")
            if self.fail == "mid":
                raise ConnectionError("replica process gone")
            yield Part(body=b"data: [DONE]\n\n", last=True)
            return
        yield Part(200, ((b"content-type", b"application/json"), (b"content-length", b"999")))
        yield Part(body=json.dumps({"replica": self.index, "user": body.get("user")}).encode(), last=True)


@pytest.fixture
def setup():
    replicas = [FakeReplica(0), FakeReplica(1)]
    router = UserRouter(replicas, capacity=2)

    async def endpoint(request: Request):
        return await router(request)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
    with TestClient(app) as client:
        yield client, router, replicas


def user_of(replica: int) -> str:
    return next(u for u in (f"u{i}" for i in range(100)) if UserRing(2).order(u)[0] == replica)


def test_a_user_goes_to_their_replica_whose_answer_comes_back_whole(setup):
    client, _, _ = setup
    for replica in (0, 1):
        answer = client.post("/v1/chat/completions", json={"user": user_of(replica)})
        assert answer.status_code == 200 and answer.headers[REPLICA_HEADER] == str(replica)
        assert answer.json() == {"replica": replica, "user": user_of(replica)}  # a stale content-length dropped


def test_a_replica_failing_before_answering_costs_the_client_nothing_and_is_skipped_until_healthy(setup):
    client, router, replicas = setup
    user = user_of(0)
    replicas[0].fail = "before"
    answer = client.post("/v1/chat/completions", json={"user": user})
    assert answer.status_code == 200 and answer.headers[REPLICA_HEADER] == "1"
    assert router.down_until[0] > 0
    replicas[0].fail = None  # replaced by Ray, but still marked: the user stays on replica 1 ...
    assert client.post("/v1/chat/completions", json={"user": user}).headers[REPLICA_HEADER] == "1"
    assert client.get("/health").json()["status"] == "ok"  # ... until a health check finds it answering
    assert client.post("/v1/chat/completions", json={"user": user}).headers[REPLICA_HEADER] == "0"


def test_a_replica_failing_mid_stream_ends_the_stream_with_an_error_event(setup):
    client, router, replicas = setup
    replicas[0].fail = "mid"
    answer = client.post("/v1/chat/completions", json={"user": user_of(0), "stream": True})
    events = [e for e in answer.text.split("\n\n") if e]
    assert events[0] == "data: first" and "failed mid-answer" in events[-1]
    assert router.down_until[0] > 0 and router.in_flight == [0, 0]


def test_no_replica_up_is_a_503_and_health_says_which_is_down(setup):
    client, _, replicas = setup
    replicas[1].fail = "dead"
    health = client.get("/health").json()
    assert health["status"] == "degraded" and [r["status"] for r in health["replicas"]] == ["ok", "down"]
    assert health["replicas"][0]["pid"] == 1000
    replicas[0].fail = "dead"
    assert client.get("/health").status_code == 503
    answer = client.post("/v1/chat/completions", json={"user": "anyone"})
    assert answer.status_code == 503 and "no replica is up" in answer.json()["error"]["message"]


def test_admin_goes_to_every_replica(setup):
    client, _, replicas = setup
    answer = client.post("/admin/reload")
    assert [r["replica"] for r in answer.json()["replicas"]] == [0, 1]
    assert all("/admin/reload" in r.seen for r in replicas)
