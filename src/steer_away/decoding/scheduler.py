"""Who runs in the next step: the only admission policy, in plain Python over request states.

The scheduler keeps the waiting queue (first come, first served) and the running batch in row
order. At each step it ends cancelled requests, keeps the running ones decoding, and lets as many
waiting ones join as the join policy allows; after the step, requests that finished leave. It
never touches a tensor, so it is tested without a model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from steer_away.decoding.request import FINISHED, RequestStatus
from steer_away.errors import InputError

JoinPolicy = Callable[[int, int], int]  # (requests already in the loop, max batch) -> how many more may join now


def continuous(running: int, max_batch: int) -> int:
    """Join at any step boundary while a slot is free."""
    return max_batch - running


def static(running: int, max_batch: int) -> int:
    """Join only when the running batch has ended: a batch is decoded to its end before the next
    starts (how the server worked before continuous batching; kept to compare against)."""
    return max_batch if running == 0 else 0


JOIN_POLICIES: dict[str, JoinPolicy] = {"continuous": continuous, "static": static}


def join_policy_named(name: str) -> JoinPolicy:
    try:
        return JOIN_POLICIES[name]
    except KeyError:
        raise InputError(f"unknown scheduler {name!r}; choose one of {', '.join(JOIN_POLICIES)}") from None


class Schedulable(Protocol):
    """What the scheduler reads and writes of a request (DecodeRequest, or a plain test double)."""

    status: RequestStatus
    cancel_requested: bool


R = TypeVar("R", bound=Schedulable)


@dataclass
class ScheduledStep(Generic[R]):
    """One step's plan: who left before it, who decodes a token, who joins (is prefilled)."""

    cancelled: list[R] = field(default_factory=list)  # ended by their clients; they take no part
    left: list[R] = field(default_factory=list)  # of those, the ones that held rows in the running batch
    decode: list[R] = field(default_factory=list)  # running requests, in row order
    join: list[R] = field(default_factory=list)  # waiting requests joining, appended after `decode`


class Scheduler(Generic[R]):
    """Waiting queue and running batch. `max_batch=None`: everything waiting joins at the next step."""

    def __init__(self, policy: JoinPolicy = continuous, max_batch: int | None = None) -> None:
        if max_batch is not None and max_batch < 1:
            raise InputError(f"max_batch must be >= 1, got {max_batch}")
        self.policy, self.max_batch = policy, max_batch
        self.waiting: list[R] = []
        self.running: list[R] = []  # in row order

    def __len__(self) -> int:
        return len(self.waiting) + len(self.running)

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def add(self, request: R) -> None:
        request.status = RequestStatus.WAITING
        self.waiting.append(request)

    def room(self) -> int:
        """How many more requests may be added now (the server dequeues no more than this)."""
        if self.max_batch is None:
            return sys.maxsize
        return max(0, self.policy(len(self), self.max_batch))

    def schedule(self) -> ScheduledStep[R]:
        step: ScheduledStep[R] = ScheduledStep()
        for request in self.waiting + self.running:
            if request.cancel_requested and request.status not in FINISHED:
                request.status = RequestStatus.FINISHED_CANCELLED
                step.cancelled.append(request)
        step.left = [r for r in self.running if r.status in FINISHED]
        self.waiting = [r for r in self.waiting if r.status not in FINISHED]
        self.running = [r for r in self.running if r.status not in FINISHED]
        step.decode = list(self.running)
        joins = len(self.waiting)
        if self.max_batch is not None:
            joins = max(0, min(joins, self.policy(len(self.running), self.max_batch)))
        step.join, self.waiting = self.waiting[:joins], self.waiting[joins:]
        for request in step.join:
            request.status = RequestStatus.RUNNING
        self.running = step.decode + step.join
        return step

    def finish(self) -> list[R]:
        """After a step: the requests that finished in it leave the running batch; returns them."""
        finished = [r for r in self.running if r.status in FINISHED]
        self.running = [r for r in self.running if r.status not in FINISHED]
        return finished
