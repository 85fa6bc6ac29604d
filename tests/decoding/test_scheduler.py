"""The scheduler on its own: plain request doubles, no model, no tensors."""

from dataclasses import dataclass

import pytest

from steer_away.decoding.request import RequestStatus
from steer_away.decoding.scheduler import Scheduler, continuous, join_policy_named, static


@dataclass(eq=False)
class Req:
    name: str
    status: RequestStatus = RequestStatus.WAITING
    cancel_requested: bool = False


def names(requests):
    return [r.name for r in requests]


def test_without_a_limit_everything_waiting_joins_at_the_next_step_in_arrival_order():
    s = Scheduler()
    for name in "abc":
        s.add(Req(name))
    step = s.schedule()
    assert names(step.join) == ["a", "b", "c"] and step.decode == [] and step.cancelled == []
    assert all(r.status is RequestStatus.RUNNING for r in step.join)
    s.add(Req("d"))
    step = s.schedule()
    assert names(step.decode) == ["a", "b", "c"] and names(step.join) == ["d"]
    assert names(s.running) == ["a", "b", "c", "d"]  # joiners go below the running rows


def test_continuous_fills_free_slots_first_come_first_served():
    s = Scheduler(continuous, max_batch=2)
    reqs = [Req(n) for n in "abcd"]
    for r in reqs:
        s.add(r)
    assert names(s.schedule().join) == ["a", "b"] and names(s.waiting) == ["c", "d"]
    assert s.room() == 0  # 4 in the loop, at most 2: the server takes nothing from its queue
    reqs[0].status = RequestStatus.FINISHED_LENGTH
    assert names(s.finish()) == ["a"]
    step = s.schedule()
    assert names(step.decode) == ["b"] and names(step.join) == ["c"]  # one slot freed, one joins


def test_static_waits_for_the_whole_batch_to_end():
    s = Scheduler(static, max_batch=2)
    a, b, c = Req("a"), Req("b"), Req("c")
    for r in (a, b, c):
        s.add(r)
    assert names(s.schedule().join) == ["a", "b"]
    a.status = RequestStatus.FINISHED_STOPPED
    s.finish()
    assert s.schedule().join == []  # b still runs: c waits although a slot is free
    b.status = RequestStatus.FINISHED_LENGTH
    s.finish()
    assert names(s.schedule().join) == ["c"]


def test_room_counts_waiting_and_running_under_the_policy():
    s = Scheduler(continuous, max_batch=3)
    assert s.room() == 3
    s.add(Req("a"))
    assert s.room() == 2
    s.schedule()
    assert s.room() == 2
    assert Scheduler(static, max_batch=3).room() == 3


def test_a_cancelled_request_leaves_before_the_step_whether_waiting_or_running():
    s = Scheduler()
    running, waiting = Req("running"), Req("waiting")
    s.add(running)
    s.schedule()
    s.add(waiting)
    running.cancel_requested = waiting.cancel_requested = True
    step = s.schedule()
    assert set(names(step.cancelled)) == {"running", "waiting"}
    assert names(step.left) == ["running"]  # only it held rows in the running batch
    assert step.decode == [] and step.join == [] and s.idle
    assert running.status is waiting.status is RequestStatus.FINISHED_CANCELLED


def test_a_finished_request_is_not_cancelled_again():
    s = Scheduler()
    r = Req("a")
    s.add(r)
    s.schedule()
    r.status = RequestStatus.FINISHED_STOPPED
    r.cancel_requested = True
    assert s.schedule().cancelled == []
    assert r.status is RequestStatus.FINISHED_STOPPED


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        Scheduler(continuous, max_batch=0)
    with pytest.raises(ValueError, match="unknown scheduler 'fifo'"):
        join_policy_named("fifo")
