"""The decode loop every generation runs through: offline batches and the server alike.

Requests join and leave at step boundaries (continuous batching). Each step is
schedule → execute → update: the scheduler says who leaves, who decodes and who joins; the runner
runs the decoding rows one token (all requests' edits stacked into one pass) and prefills the
joiners, whose keys and values are appended to the running batch's cache; the sampler picks each
request's token from its own rows (combined by its method); then requests that finished leave and
their rows are cut out of the cache.

Each request keeps its own steering. A method's branches (base, expert, anti-expert, …) are rows of
the shared forward batch, combined per request before its token is picked. A method that answers by
choosing among whole sampled answers (`SteeringMethod.answer_choice`) fans its request out into
that many sampled requests; the request ends, with the chosen answer, in the step its last one ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence

import torch

from steer_away.chat import as_conversation, render_chat
from steer_away.decoding.kv_cache import RunningBatch
from steer_away.decoding.request import DecodeRequest, RequestStatus, RunState
from steer_away.decoding.runner import ModelRunner, PrefillGroup
from steer_away.decoding.sampler import Sampler
from steer_away.decoding.scheduler import JoinPolicy, Scheduler, continuous
from steer_away.models import LanguageModel
from steer_away.steering.base import AnswerChoice


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
        self.batch: RunningBatch | None = None  # the running requests' cache and mask
        self._members: list[DecodeRequest] = []  # whose rows `batch` holds, in row order
        self._member_set: set[DecodeRequest] = set()
        self.prefill_chunk = prefill_chunk
        self.isolate_failures = isolate_failures
        self._prefilling: list[PrefillGroup] = []  # joiners whose prompts are being fed, oldest first
        self._stops = set(stop_token_ids(lm))
        self.steps = 0
        self._fanned: dict[DecodeRequest, tuple[AnswerChoice, list[DecodeRequest]]] = {}  # request -> its samples
        self._owner: dict[DecodeRequest, DecodeRequest] = {}  # sample -> the request it was drawn for

    # -- membership --

    def add(self, request: DecodeRequest) -> DecodeRequest:
        """Queue a request to join at the next step; a method that cannot serve it raises here."""
        choice = request.method.answer_choice()
        if choice is not None:
            return self._fan_out(request, choice)
        self._prepare(request)
        self.scheduler.add(request)
        return request

    def _prepare(self, request: DecodeRequest) -> None:
        prepared = request.method.prepare(self.lm, [as_conversation(request.conversation)], [request.row])
        texts = [render_chat(self.lm.tokenizer, branch[0]) for branch in prepared.branches]
        request.state = RunState(prepared, texts)

    def _fan_out(self, request: DecodeRequest, choice: AnswerChoice) -> DecodeRequest:
        """Queue `choice.samples` sampled requests for `request` (all prepared before any joins)."""
        config = dataclasses.replace(request.config, do_sample=True, temperature=choice.temperature)
        first = _first_seed(request, choice)
        samples = [DecodeRequest(request.conversation, choice.sampler, request.row, config,
                                 torch.Generator(device=self.lm.device).manual_seed(first + i), loglik=0.0)
                   for i in range(choice.samples)]
        for sample in samples:
            self._prepare(sample)
        for sample in samples:
            self.scheduler.add(sample)
            self._owner[sample] = request
        self._fanned[request] = (choice, samples)
        request.status = RequestStatus.RUNNING
        return request

    def cancel(self, request: DecodeRequest) -> None:
        """End a request at the next step boundary (a client that left); it keeps what it has."""
        request.cancel_requested = True
        for sample in self._fanned.get(request, (None, []))[1]:
            sample.cancel_requested = True

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
        if any(r in self._member_set for r in plan.left):
            self._keep([r for r in plan.decode if r in self._member_set])
        decoding = [r for r in plan.decode if r in self._member_set]  # the rest are still being prefilled
        if decoding:
            assert self.batch is not None
            for request in decoding:
                RunState.of(request).steps += 1
            logits = self.runner.decode(decoding, self.batch)
            self._update(decoding, self.sampler.sample(decoding, logits))
        if plan.join:
            self._prefilling += self._start_prefill(plan.join)
        self._prefilling = [self.runner.without_done(g) for g in self._prefilling
                            if not all(r.done for r in g.requests)]  # rows of requests gone are not fed on
        if self._prefilling:
            self._advance_prefill()
        finished = self.scheduler.finish()
        if finished:
            self._keep([r for r in self.scheduler.running if r in self._member_set])
        self.steps += 1
        return self._settle(plan.cancelled + finished)

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
        start = 0
        for request in group.requests:
            request.prompt_tokens = int(group.mask[start].sum())
            request.joined_at = self.steps
            start += request.width
        live = [r for r in group.requests if not r.done]  # a client may have left while it was prefilled
        if not live:
            return
        joined = group.batch(self.lm)
        if len(live) < len(group.requests):
            rows = _rows_of(group.requests, live)
            logits = logits[rows]
            joined.keep(rows)
        self._update(live, self.sampler.sample(live, logits))
        if self.batch is None:
            self.batch = joined
        else:
            self.batch.append(joined.cache, joined.mask)
        self._members += live
        self._member_set.update(live)
        self.runner.batch_changed()

    def _settle(self, ended: list[DecodeRequest]) -> list[DecodeRequest]:
        """The requests that ended: a sample stands for the request it was drawn for, which ends (with
        the answer its method chooses) when its last sample has."""
        out = []
        for request in ended:
            owner = self._owner.pop(request, None)
            if owner is None:
                out.append(request)
                continue
            choice, samples = self._fanned[owner]
            if any(sample in self._owner for sample in samples):
                continue
            del self._fanned[owner]
            failed = next((sample.error for sample in samples if sample.error is not None), None)
            if owner.cancel_requested:
                owner.status = RequestStatus.FINISHED_CANCELLED
            elif failed is not None:
                owner.fail(failed)
            else:
                texts = [sample.result(self.lm).text for sample in samples]
                try:
                    chosen = samples[choice.choose(owner.row, texts, [s.loglik or 0.0 for s in samples])]
                except Exception as err:  # its judge: this request alone fails
                    owner.fail(err)
                    out.append(owner)
                    continue
                owner.prompt_tokens, owner.joined_at = chosen.prompt_tokens, chosen.joined_at
                owner.status = chosen.status
                for token in chosen.tokens:
                    if not _append(owner, token):
                        break
            out.append(owner)
        return out

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
            if not _append(request, token):
                continue
            if config.stop and self._says_stop(request):
                request.status = RequestStatus.FINISHED_STOPPED
            elif len(request.tokens) >= config.max_new_tokens:
                request.status = RequestStatus.FINISHED_LENGTH

    def _says_stop(self, request: DecodeRequest) -> bool:
        """Whether a stop text appeared; only the end can hold a new one, so only the last tokens are decoded
        (enough for the longest stop text even at one byte a token)."""
        longest = max(len(stop.encode()) for stop in request.config.stop)
        tail = self.lm.tokenizer.decode(request.tokens[-(longest + 2):], skip_special_tokens=True)
        return any(stop and stop in tail for stop in request.config.stop)

    def _keep(self, kept: Sequence[DecodeRequest]) -> None:
        """Keep only `kept`'s rows of the running batch (a subsequence of its members, in order)."""
        self.runner.batch_changed()
        if not kept or self.batch is None:
            self.batch, self._members, self._member_set = None, [], set()
            return
        self.batch.keep(_rows_of(self._members, kept))
        self._members, self._member_set = list(kept), set(kept)


def _append(request: DecodeRequest, token: int) -> bool:
    """Add a token to the answer and tell the request's caller; a callback that raises fails this
    request only. False when it did."""
    request.tokens.append(token)
    if request.on_token is not None:
        try:
            request.on_token(token)
        except Exception as err:
            request.fail(err)
            return False
    return True


def _rows_of(members: Sequence[DecodeRequest], kept: Sequence[DecodeRequest]) -> list[int]:
    """The row indices `kept` (a subsequence of `members`, in order) hold in a batch of `members`' rows."""
    offsets, start = {}, 0
    for request in members:
        offsets[id(request)] = start
        start += request.width
    return [row for r in kept for row in range(offsets[id(r)], offsets[id(r)] + r.width)]


def _first_seed(request: DecodeRequest, choice: AnswerChoice) -> int:
    """Where a fanned-out request's sample seeds start: drawn from its own generator (a seed it was
    given); a sampled request without one draws afresh, as any sampled request does; a greedy one
    starts from the method's seed, its conversation and user, so that it answers the same every time
    and whatever it runs beside (what a sweep needs)."""
    if request.generator is not None:
        return int(torch.randint(0, 2**62, (1,), generator=request.generator, device=request.generator.device))
    if request.config.do_sample:
        return int(torch.randint(0, 2**62, (1,)))
    ident = json.dumps([choice.seed, as_conversation(request.conversation), request.row.user_id], sort_keys=True)
    return int.from_bytes(hashlib.sha256(ident.encode()).digest()[:7], "big")
