"""The decode loop every generation runs through: offline batches and the server alike.

Requests join and leave at step boundaries (continuous batching). Each step is
schedule → execute → update: the scheduler says who leaves, who decodes and who joins; the runner
runs the decoding rows one token (all requests' edits stacked into one pass) and prefills the
joiners, whose keys and values are copied into the running batch's cache; the sampler picks each
request's token from its own rows (turned into scores by its method); then requests that finished
leave and their slots are refilled by the last rows.

Each request keeps its own steering. A method's branches (base, expert, anti-expert, …) are rows of
the shared forward batch, turned into scores per request before its token is picked. The loop sees
only such requests: a method that answers by choosing among whole sampled answers is fanned out
into ordinary requests before they reach it (`decoding.engine`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steer_away.chat import as_conversation, render_chat
from steer_away.decoding.kv_cache import RunningBatch
from steer_away.decoding.request import DecodeRequest, RequestStatus, RunState
from steer_away.decoding.runner import ModelRunner, PrefillGroup
from steer_away.decoding.sampler import Sampler
from steer_away.decoding.scheduler import JoinPolicy, Scheduler, continuous
from steer_away.models import LanguageModel


def stop_token_ids(lm: LanguageModel) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(lm.model, "generation_config", None), lm.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


class DecodeLoop:
    """A running batch that requests join and leave at step boundaries; `step()` advances it by one
    token. Not thread-safe: one thread owns a loop (and the model) and calls everything on it.

    `max_batch` (with its join policy) bounds how many requests run at once; None lets every
    waiting request join at the next step (offline `generate`). `prefill_chunk` (tokens, over all
    the joiners' rows) splits a long prefill over several steps, each also decoding the running
    rows one token, so that a stream never waits for a whole prefill; None prefills in one pass.

    With `isolate_failures` (a server), a request whose own part of a step raises ends alone
    (`RequestStatus.FINISHED_FAILED`, its error kept) and a prefill that raises is retried request by
    request to find whose it is; without it (offline runs, which stop at the first error anyway),
    a prefill error is raised at once."""

    def __init__(self, lm: LanguageModel, policy: JoinPolicy = continuous, max_batch: int | None = None,
                 prefill_chunk: int | None = None, isolate_failures: bool = True) -> None:
        self.lm = lm
        self.scheduler: Scheduler[DecodeRequest] = Scheduler(policy, max_batch)
        self.runner = ModelRunner(lm)
        self.sampler = Sampler()
        self.batch = RunningBatch(lm)  # the running requests' rows
        self.prefill_chunk = prefill_chunk
        self.isolate_failures = isolate_failures
        self._prefilling: list[PrefillGroup] = []  # joiners whose prompts are being fed, oldest first
        self._stops = set(stop_token_ids(lm))
        self.steps = 0

    # -- membership --

    def add(self, request: DecodeRequest) -> DecodeRequest:
        """Queue a request to join at the next step; a method that cannot serve it raises here."""
        if request.state is None:
            self.prepare(request)
        self.scheduler.add(request)
        return request

    def prepare(self, request: DecodeRequest) -> None:
        """Let the request's method prepare its branches (raising if it cannot serve it)."""
        if request.method.capabilities.chooses_answers:
            raise TypeError(f"{request.method.name} chooses among whole answers: add it to a DecodeEngine")
        prepared = request.method.prepare(self.lm, [as_conversation(request.conversation)], [request.row])
        request.state = RunState(prepared, [render_chat(self.lm.tokenizer, branch[0]) for branch in prepared.branches])

    def cancel(self, request: DecodeRequest) -> None:
        """End a request at the next step boundary (a client that left); it keeps what it has."""
        request.cancel_requested = True

    def room(self) -> int:
        """How many more requests may be added now (the scheduler's join policy)."""
        return self.scheduler.room()

    @property
    def active(self) -> list[DecodeRequest]:
        return list(self.scheduler.running)

    @property
    def pending(self) -> list[DecodeRequest]:
        return list(self.scheduler.waiting)

    def __len__(self) -> int:
        return len(self.scheduler)

    @property
    def idle(self) -> bool:
        return self.scheduler.idle

    def run(self) -> None:
        while not self.idle:
            self.step()

    # -- one step --

    @torch.inference_mode()
    def step(self) -> list[DecodeRequest]:
        """Cancelled requests leave, running ones decode one token, joiners are prefilled (their
        first token; with `prefill_chunk`, one chunk of the oldest joiners' prompts per step); returns
        the requests that ended in this step."""
        plan = self.scheduler.schedule()
        self.batch.leave(plan.left)
        decoding = [r for r in plan.decode if r in self.batch]  # the rest are still being prefilled
        if decoding:
            for request in decoding:
                RunState.of(request).steps += 1
            logits = self.runner.decode(self.batch)
            self._update(decoding, self.sampler.sample(decoding, logits, [self.batch.slots[r] for r in decoding]))
        if plan.join:
            self._prefilling += self._start_prefill(plan.join)
        self._prefilling = [self.runner.without_done(g) for g in self._prefilling
                            if not all(r.done for r in g.requests)]  # rows of requests gone are not fed on
        if self._prefilling:
            self._advance_prefill()
        finished = self.scheduler.finish()
        self.batch.leave(finished)
        self.steps += 1
        return plan.cancelled + finished

    def _start_prefill(self, joining: list[DecodeRequest]) -> list[PrefillGroup]:
        """The joiners' prefill, not yet run. Their rows are encoded together; a request whose own
        encoding fails (its text, its prefix) is failed alone and the rest are encoded without it."""
        try:
            return [self.runner.start_prefill(joining)]
        except Exception as err:
            if not self.isolate_failures:
                raise
            if len(joining) == 1:
                joining[0].fail(err)
                return []
        return [group for request in joining if not request.done for group in self._start_prefill([request])]

    def _advance_prefill(self) -> None:
        """Feed the oldest prefill group its next chunk; once it is whole, its requests take their first
        token and their rows join the running batch. A group whose pass fails is split, so that only
        the request whose rows raise is failed."""
        group = self._prefilling[0]
        try:
            logits = self.runner.advance_prefill(group, self.prefill_chunk)
        except Exception as err:
            if not self.isolate_failures:
                raise
            self._prefilling.pop(0)
            if len(group.requests) == 1:
                group.requests[0].fail(err)
            else:  # rerun each request's prefill alone, from the start, to find the one that raises
                self._prefilling[:0] = [g for r in group.requests if not r.done for g in self._start_prefill([r])]
            return
        if logits is None:
            return
        self._prefilling.pop(0)
        for (request, branch), source in zip(group.owners, group.sources):
            if branch == 0:  # its prompt: the base branch's tokens
                request.prompt_tokens = int(group.mask[source].sum())
                request.joined_at = self.steps
        # every request of the group is live (`without_done` ran this step): each takes its first token
        rows, start = [], 0
        for request in group.requests:
            rows.append(list(range(start, start + request.width)))
            start += request.width
        self._update(group.requests, self.sampler.sample(group.requests, logits[group.sources], rows))
        kept = [k for k, (request, _) in enumerate(group.owners) if not request.done]  # not those that ended on it
        if kept:
            self.batch.join(group.cache, [group.sources[k] for k in kept], [group.owners[k] for k in kept])

    def _update(self, requests: Sequence[DecodeRequest], tokens: Sequence[int | None]) -> None:
        """Append each request's token, or end it on a stop token or at its length (a request the
        sampler failed has no token)."""
        for request, token in zip(requests, tokens):
            config = request.config
            if token is None:
                continue
            if config.stop_on_eos and token in self._stops:
                request.status = RequestStatus.FINISHED_STOPPED
                continue
            RunState.of(request).next_token = token
            if not request.append(token):
                continue
            if config.stop and self._says_stop(request):
                request.status = RequestStatus.FINISHED_STOPPED
            elif len(request.tokens) >= config.max_new_tokens:
                request.status = RequestStatus.FINISHED_LENGTH

    def _says_stop(self, request: DecodeRequest) -> bool:
        """Whether a stop text appeared in the answer so far. The whole answer is decoded (0.1 ms for 512
        tokens with SmolLM2's tokenizer, against a step of tens of ms; only requests with stop texts): a window of the last
        tokens could begin inside a character split over several byte tokens, and that half character
        decodes as U+FFFD (a stop of "\\ufffd" cut answers after two tokens). An answer that ends inside
        a character is not judged on it until the character is whole."""
        text = self.lm.tokenizer.decode(request.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            text = text.rstrip("\ufffd")
        return any(stop and stop in text for stop in request.config.stop)
