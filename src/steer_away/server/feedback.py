"""Learning from users' choices while serving: `POST /v1/feedback` records a choice durably and answers
at once; a background thread scores the answers, updates that user's profile (profiles/online.py) and,
once they have made enough choices, swaps it into the served methods for their next request.

The request path does no scoring and no model work: it checks the choice, resolves completion ids
against the answers this server gave (`CompletionLog`), rate-limits per user (`FloodGuard`), and
commits the event (`FeedbackStore`). Everything learned is rebuilt from the stored events at start,
so a restart (or a kill) loses no acknowledged choice.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steer_away.profiles.build import profiles_payload
from steer_away.profiles.online import MIN_PAIRS, Choice, OnlineProfiles, population_cutoffs
from steer_away.scoring import make_scorer
from steer_away.server.engine import BatchingEngine
from steer_away.server.errors import APIError
from steer_away.server.feedback_store import FeedbackStore
from steer_away.server.methods import ServedMethods
from steer_away.server.protocol import AnswerText, FeedbackRequest
from steer_away.steering.vectors.online import ACTIVATIONS_FILE, DislikeLearner, bank_shrinkage

log = logging.getLogger("steer_away.server")

REMEMBERED = 100_000  # completions kept for feedback by id (about 100 MB of text at most)
LEARN_EVERY_S = 1.0  # choices arriving within this long are learned from together (see _next_batch)


@dataclass(frozen=True)
class Served:
    user_id: str | None
    prompt: str
    text: str


class CompletionLog:
    """The answers this server gave lately, by completion id: feedback may name them instead of quoting."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._items: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, completion_id: str, user_id: str | None, prompt: str, text: str) -> None:
        with self._lock:
            self._items[completion_id] = Served(user_id, prompt, text)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, completion_id: str) -> Served | None:
        with self._lock:
            return self._items.get(completion_id)


class FloodGuard:
    """At most `rate` events a second per user, `burst` at once (a token bucket): one client flooding
    feedback cannot swamp the writer or move a profile faster than a person chooses."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait_for(self, user_id: str) -> float:
        """0 when the user may send an event now (and it is counted), else the seconds until they may."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(user_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens < 1:
                self._buckets[user_id] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[user_id] = (tokens - 1, now)
            return 0.0


class FeedbackService:
    def __init__(self, path: str, served: ServedMethods, engine: BatchingEngine, *, rate: float = 5.0,
                 burst: int = 20, min_pairs: int = MIN_PAIRS) -> None:
        self.store = FeedbackStore(path)
        self.served, self.engine = served, engine
        self.learner = _vector_learner(served)
        self.completions = CompletionLog()
        self.guard = FloodGuard(rate, burst)
        self.cutoffs = population_cutoffs(served.file_profiles)
        self.min_pairs = min_pairs
        self.online: OnlineProfiles | None = None  # built by the worker, with its scorer's attributes
        self.applied = 0  # events the profiles have taken in
        self.scorer_backend = served.scorer_name()  # the worker's scorer says it with its revision
        self.ready = threading.Event()  # the stored events have been replayed
        self.failed: str | None = None  # why choices cannot be learned from (no scorer), if so
        self._work: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
        self._thread.start()

    # --- the request path ---------------------------------------------------------------------

    def record(self, req: FeedbackRequest) -> dict[str, Any]:
        """Check, store and queue one choice; raises APIError for what cannot be a choice."""
        choice = self._choice(req)
        wait = self.guard.wait_for(choice.user_id)
        if wait:
            raise APIError(429, f"too much feedback from user {choice.user_id!r}: at most {self.guard.rate:g} "
                                f"events a second (retry in {wait:.1f} s)", "rate_limit_error")
        outcome = self.store.add(choice)
        if outcome == "conflict":
            raise APIError(409, f"event id {choice.event_id!r} was used for another event", param="id")
        if outcome == "recorded":
            self._work.put(("choice", choice))
        return {"id": choice.event_id, "status": outcome, "user": choice.user_id}

    def _choice(self, req: FeedbackRequest) -> Choice:
        chosen, prompt = self._answer(req.chosen, req.user, "chosen")
        rejected = [self._answer(item, req.user, f"rejected.{i}")[0] for i, item in enumerate(req.rejected)]
        if chosen in rejected or len(set(rejected)) < len(rejected):
            raise APIError(400, "a choice needs different answers: the chosen one and each rejected one must differ",
                           param="rejected")
        return Choice(req.id or f"srv-{uuid.uuid4().hex}", req.user, req.prompt or prompt, chosen, tuple(rejected),
                      None if req.rating is None else float(req.rating))

    def _answer(self, item: str | AnswerText, user_id: str, where: str) -> tuple[str, str]:
        """(text, prompt) of a quoted answer or of a completion this server gave `user_id`."""
        if isinstance(item, AnswerText):
            return item.text, ""
        served = self.completions.get(item)
        if served is None:
            raise APIError(404, f"{where}: no completion {item!r} (this server keeps its last "
                                f"{self.completions.size} answers; quote older ones as {{\"text\": …}})", param=where)
        if served.user_id != user_id:
            raise APIError(403, f"{where}: completion {item!r} was not given to user {user_id!r}",
                           "permission_error", param=where)
        if not served.text.strip():
            raise APIError(400, f"{where}: completion {item!r} is empty; there is nothing to choose", param=where)
        return served.text, served.prompt

    def forget(self, user_id: str) -> int:
        """Every choice of a user deleted (durably), their profile back to the file's; how many."""
        removed = self.store.forget(user_id)
        self._work.put(("forget", user_id))
        return removed

    def status(self, user_id: str) -> dict[str, Any]:
        online = self.online
        pairs = online.pairs(user_id) if online is not None else 0
        learned = self.served.learned.get(user_id)
        return {"user": user_id, "pairs": pairs, "min_pairs": self.min_pairs, "learning": self.failed or "on",
                "steered_by": "own choices" if learned is not None else
                ("profiles file" if user_id in self.served.file_profiles else "population"),
                "profile": None if learned is None else dataclasses.asdict(learned)}

    def export(self) -> dict[str, Any]:
        """The served profiles (the file's, learned ones in their place) as a profiles file, for
        `profiles build`'s consumers: sweeps, `generate`, another server."""
        return profiles_payload(self.served.profiles, self.scorer_backend)

    # --- the background thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            scorer = make_scorer(self.served.scorer_name())  # its own: a score cache connection is per thread
        except Exception as err:  # choices are still recorded; they are learned from after a restart that can score
            self.failed = f"{type(err).__name__}: {err}"
            log.error("feedback: cannot score choices (%s); they are stored, not learned from", self.failed)
            self.ready.set()
            return
        self.scorer_backend = scorer.backend
        self.online = OnlineProfiles(scorer.attributes, self.cutoffs, min_pairs=self.min_pairs)
        stored = list(self.store.events())
        for start in range(0, len(stored), 256):
            self._learn(scorer, stored[start:start + 256], swap=False)
        learner, ready = self.learner, self.online.steering_profiles()
        self.served.learn(ready, {learner.kind: {u: learner.vector(u) for u in ready}} if learner else None)
        self.ready.set()
        log.info("feedback: %d stored choices of %d users replayed", self.applied, len(self.online.evidence))
        while True:
            batch = self._next_batch()
            choices = [item for kind, item in batch if kind == "choice"]
            try:
                if choices:
                    self._learn(scorer, choices, swap=True)
                for kind, item in batch:
                    if kind == "forget":
                        self._forget_now(item)
            except Exception:  # one bad batch must not stop learning from the rest
                log.exception("feedback: could not learn from %d events", len(batch))
            finally:
                for _ in batch:
                    self._work.task_done()
            if any(kind == "stop" for kind, _ in batch):
                return

    def _next_batch(self) -> list[tuple[str, Any]]:
        """The next events, gathered for up to `LEARN_EVERY_S` after the first: one scoring call, one pass
        of the model and one swap of the methods for all of them, not one each (each swap rebuilds the
        methods that read profiles, work the decoding thread would otherwise share the CPU with)."""
        batch = [self._work.get()]
        deadline = time.monotonic() + LEARN_EVERY_S
        while batch[-1][0] == "choice" and len(batch) < 256:
            try:
                batch.append(self._work.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _learn(self, scorer: Any, choices: list[Choice], *, swap: bool) -> None:
        assert self.online is not None
        texts = [t for c in choices for t in (c.chosen, *c.rejected)]
        scores = np.asarray(scorer.score(texts))
        changed: dict[str, Any] = {}
        vectors: dict[str, Any] = {}
        diffs = self._differences(choices) if self.learner is not None else []
        at = 0
        for i, choice in enumerate(choices):
            own = scores[at:at + 1 + len(choice.rejected)]
            at += len(own)
            profile = self.online.apply(choice, own[0], list(own[1:]))
            if self.learner is not None:
                # as compose's pair_weights: margin / 100 x (1 + |TOXICITY gap|), the margin being the pick's rating
                weights = [choice.weight * (1.0 + abs(float(own[0][0] - r[0]))) for r in own[1:]]
                vectors[choice.user_id] = self.learner.add(choice.user_id, diffs[i], weights)
            if self.online.ready(choice.user_id):
                changed[choice.user_id] = profile
            self.applied += 1
        if swap and changed:
            learned = {u: v for u, v in vectors.items() if u in changed}
            self.served.learn(changed, {self.learner.kind: learned} if self.learner is not None else None)

    def _differences(self, choices: list[Choice]) -> list[Any]:
        """Each choice's activation differences, read by the decoding thread in its idle moments, one
        choice at a time (a request arriving meanwhile waits for one short pass at most)."""
        learner, lm = self.learner, self.served.lm
        assert learner is not None
        def reader(choice: Choice) -> Callable[[], Any]:
            return lambda: learner.differences(lm, choice.prompt, choice.chosen, choice.rejected)

        futures = [self.engine.between_steps(reader(c)) for c in choices]
        return [f.result(timeout=600) for f in futures]

    def _forget_now(self, user_id: str) -> None:
        assert self.online is not None
        self.online.reset(user_id)
        if self.learner is not None:
            self.learner.reset(user_id)
        self.served.learn({user_id: None}, {self.learner.kind: {user_id: None}} if self.learner else None)

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until every queued event has been learned from (tests, benchmarks, export)."""
        if not self.ready.wait(timeout):
            raise TimeoutError("feedback replay did not finish")
        if self.failed is None:
            self._work.join()

    def close(self) -> None:
        self._work.put(("stop", None))
        self._thread.join(timeout=10)
        self.store.close()


def _vector_learner(served: ServedMethods) -> DislikeLearner | None:
    """A learner of per-user vectors when a served method steers with the bank it makes and the pair
    activations it is defined over are in the vector store; else profiles only."""
    bank = served.served_bank(DislikeLearner.kind)
    store = served.vectors_path
    if bank is None or store is None or not (Path(store) / ACTIVATIONS_FILE).is_file():
        return None
    return DislikeLearner(store, bank_shrinkage(bank))
