"""What `generate` and the server drive: the decode loop, with whole-answer search in front of it.

A request whose method answers by choosing among whole sampled answers (`capabilities.chooses_answers`:
reranking) becomes a parent request, as vLLM's `ParentRequest` handles n-sampling outside its engine
core: its candidates are ordinary sampled requests of the method it wraps, which the loop runs like
any others, and once the last of them ends the parent ends with the answer its method chooses. The
loop never knows.

Candidates are drawn once and shared: parents whose draws would be the same (one conversation, one
sampler group, one seed, one setting) wait on the same candidates, and each chooses among them by its
own target. A greedy parent (what sweeps run) is seeded from its method's seed, its conversation and
its sampler group, not from its user: the unsteered model, population CAA or one EADS category
draws once per prompt, and every user chooses among the same answers. A parent with a generator
draws its seed from it; a sampled one without draws afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from steer_away.chat import as_conversation
from steer_away.decoding.loop import DecodeLoop
from steer_away.decoding.request import AnswerScore, DecodeRequest, RequestStatus
from steer_away.decoding.scheduler import JoinPolicy, continuous
from steer_away.decoding.scoring import ANSWER_BATCH, answer_scores
from steer_away.models import LanguageModel
from steer_away.steering.framework.method import AnswerChoice


@dataclass(eq=False)
class Candidates:
    """Sampled answers that one or more parents choose among."""

    key: Hashable
    requests: list[DecodeRequest]
    parents: list[ParentRequest] = field(default_factory=list)
    texts: list[str] | None = None  # once they have all ended
    scores: list[AnswerScore] | None = None  # perplexity and relevance, when a parent's choice asks for them
    scoring_error: Exception | None = None  # why they could not be scored (their parents fail with it)


@dataclass(eq=False)
class ParentRequest:
    """A request answered by choosing among candidates."""

    request: DecodeRequest
    choice: AnswerChoice
    candidates: Candidates


def candidate_seed(request: DecodeRequest, choice: AnswerChoice) -> int | None:
    """Where a parent's candidate seeds start (None: fresh draws, shared with no one)."""
    return _seed(request, choice, *_draws(request, choice))


def _draws(request: DecodeRequest, choice: AnswerChoice) -> tuple[str, str]:
    """What the candidates are drawn from: the conversation, and the group its sampler steers it in
    (not its user: rows the sampler steers alike draw alike)."""
    return (json.dumps(as_conversation(request.conversation), sort_keys=True),
            repr(choice.sampler.answer_group(request.row)))


def _seed(request: DecodeRequest, choice: AnswerChoice, conversation: str, group: str) -> int | None:
    if request.generator is not None:
        return int(torch.randint(0, 2**62, (1,), generator=request.generator, device=request.generator.device))
    if request.config.do_sample:
        return None
    ident = json.dumps([choice.seed, conversation, group])
    return int.from_bytes(hashlib.sha256(ident.encode()).digest()[:7], "big")


class DecodeEngine:
    """A decode loop (`loop`) and the parent requests waiting on candidates in it. Not thread-safe,
    like the loop: one thread owns both."""

    def __init__(self, lm: LanguageModel, policy: JoinPolicy = continuous, max_batch: int | None = None,
                 prefill_chunk: int | None = None, isolate_failures: bool = True) -> None:
        self.lm = lm
        self.loop = DecodeLoop(lm, policy, max_batch, prefill_chunk, isolate_failures)
        self._parents: dict[DecodeRequest, ParentRequest] = {}
        self._pool: dict[Hashable, Candidates] = {}  # candidates still being drawn, by what makes them the same
        self._waiting: dict[DecodeRequest, Candidates] = {}  # candidate -> the set it belongs to

    # -- membership --

    def add(self, request: DecodeRequest) -> DecodeRequest:
        """Queue a request (a parent's candidates, for a method that chooses among answers); a method that
        cannot serve it raises here."""
        if not request.method.capabilities.chooses_answers:
            return self.loop.add(request)
        choice = request.method.answer_choice()
        if choice is None:
            raise TypeError(f"{request.method.name} declares chooses_answers but gives no answer choice")
        # A sampled request's own temperature draws its candidates (as its top-p always did); a greedy one
        # leaves it to the method (the candidates must differ to be chosen among).
        temperature = request.config.temperature if request.config.do_sample else choice.temperature
        config = dataclasses.replace(request.config, do_sample=True, temperature=temperature)
        conversation, group = _draws(request, choice)
        seed = _seed(request, choice, conversation, group)
        key = (seed, conversation, group, id(choice.sampler), choice.samples, config)
        candidates = self._pool.get(key) if seed is not None else None
        if candidates is None:
            first = seed if seed is not None else int(torch.randint(0, 2**62, (1,)))
            drawn = [DecodeRequest(request.conversation, choice.sampler, request.row, config,
                                   torch.Generator(device=self.lm.device).manual_seed(first + i), loglik=0.0)
                     for i in range(choice.samples)]
            for sample in drawn:  # all prepared (a method that cannot serve it raises) before any joins
                self.loop.prepare(sample)
            for sample in drawn:
                self.loop.add(sample)
            candidates = Candidates(key, drawn)
            for sample in drawn:
                self._waiting[sample] = candidates
            if seed is not None:
                self._pool[key] = candidates
        parent = ParentRequest(request, choice, candidates)
        candidates.parents.append(parent)
        self._parents[request] = parent
        request.status = RequestStatus.RUNNING
        return request

    def cancel(self, request: DecodeRequest) -> None:
        """End a request at the next step boundary (a client that left); it keeps what it has."""
        request.cancel_requested = True

    def room(self) -> int:
        return self.loop.room()

    @property
    def active(self) -> list[DecodeRequest]:
        return self.loop.active

    @property
    def pending(self) -> list[DecodeRequest]:
        return self.loop.pending

    def __len__(self) -> int:
        return len(self.loop)

    @property
    def idle(self) -> bool:
        return self.loop.idle and not self._parents

    @property
    def steps(self) -> int:
        return self.loop.steps

    def run(self) -> None:
        while not self.idle:
            self.step()

    # -- one step --

    def step(self) -> list[DecodeRequest]:
        """One step of the loop; returns the requests that ended in it: its own, and parents that were
        cancelled or whose last candidate ended."""
        out = [parent.request for parent in list(self._parents.values()) if parent.request.cancel_requested]
        for request in out:
            self._leave(self._parents.pop(request))
            request.status = RequestStatus.FINISHED_CANCELLED
        complete = []
        for request in self.loop.step():
            candidates = self._waiting.pop(request, None)
            if candidates is None:
                out.append(request)
            elif not any(sample in self._waiting for sample in candidates.requests):  # the last of them
                complete.append(candidates)
        self._score(complete)
        for candidates in complete:
            self._forget(candidates)
            for parent in candidates.parents:
                del self._parents[parent.request]
                out.append(self._choose(parent))
        return out

    def _score(self, complete: Sequence[Candidates]) -> None:
        """Decode every set that ended in this step, and score those a parent's choice weighs by relevance in
        one call (sets ending together, as a sweep's do, fill one batch instead of one each)."""
        wanted = []
        for candidates in complete:
            if any(sample.error is not None for sample in candidates.requests):
                continue  # its parents fail with the candidate's error
            candidates.texts = [sample.result(self.lm).text for sample in candidates.requests]
            if any(parent.choice.wants_relevance for parent in candidates.parents):
                wanted.append(candidates)
        if not wanted:
            return
        prompts = [c.parents[0].request.conversation for c in wanted for _ in c.requests]
        try:
            scores = answer_scores(self.lm, prompts, [t for c in wanted for t in c.texts or []], relevance=True,
                                   batch_size=ANSWER_BATCH)
        except Exception as err:  # the model failed on them: their parents fail, the loop runs on
            for candidates in wanted:
                candidates.scoring_error = err
            return
        for candidates in wanted:
            candidates.scores, scores = scores[:len(candidates.requests)], scores[len(candidates.requests):]

    def _leave(self, parent: ParentRequest) -> None:
        """A cancelled parent stops waiting; candidates no one else waits on stop being drawn."""
        candidates = parent.candidates
        candidates.parents.remove(parent)
        if not candidates.parents:
            self._forget(candidates)
            for sample in candidates.requests:
                self.loop.cancel(sample)

    def _forget(self, candidates: Candidates) -> None:
        """No later parent joins these candidates (another set may have their key by now)."""
        if self._pool.get(candidates.key) is candidates:
            del self._pool[candidates.key]

    def _choose(self, parent: ParentRequest) -> DecodeRequest:
        """The parent takes the candidate its method chooses (a candidate's failure, or its judge's, fails it)."""
        request, samples = parent.request, parent.candidates.requests
        failed = next((sample.error for sample in samples if sample.error is not None), None)
        if failed is not None:
            request.fail(failed)
            return request
        candidates = parent.candidates
        if candidates.scoring_error is not None:
            request.fail(candidates.scoring_error)
            return request
        scores = candidates.scores if parent.choice.wants_relevance else None
        try:
            index = parent.choice.choose(request.row, candidates.texts or [], [s.loglik or 0.0 for s in samples],
                                         [s.relevance for s in scores] if scores else None)
        except Exception as err:  # its judge: this request alone fails
            request.fail(err)
            return request
        chosen = samples[index]
        request.score = scores[index] if scores else None
        request.prompt_tokens, request.joined_at = chosen.prompt_tokens, chosen.joined_at
        request.status = chosen.status
        for token in chosen.tokens:
            if not request.append(token):
                break
        return request


def run_requests(engine: DecodeEngine, requests: Sequence[DecodeRequest]) -> None:
    """Add these requests and step until all have ended, raising the first failure (offline runs)."""
    for request in requests:
        engine.add(request)
    while not engine.idle:
        for ended in engine.step():
            if ended.error is not None:
                raise ended.error
