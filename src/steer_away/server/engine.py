"""The serving engine: threads, queues, streaming and metrics around the decode loop.

One worker thread owns the model and the loop (decoding/), whose scheduler is the only admission
policy: the worker moves as many queued requests into the loop as it has room for, steps it, and
delivers what ended, streaming text as it is decoded (incrementally: streaming/). Each request has
its own user's steering, method and sampling settings; a request leaves the step it ends, and a
client that disconnects frees its row at the next step. The offline `generate` runs the same loop,
so a greedy answer is the same whether it ran alone, in a batch, or joined one mid-flight.

The methods served come from `methods.ServedMethods`: a reload builds a whole new set and swaps
it in with one assignment; each request is bound to the set it was admitted under. The worker is
the queue's only consumer and never blocks on it while rows decode.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch

from steer_away.decoding import (
    DecodeEngine,
    DecodeRequest,
    cut_at_stop,
    join_policy_named,
    stop_prefix_length,
)
from steer_away.models import LanguageModel
from steer_away.server.errors import APIError, as_api_error
from steer_away.server.jobs import Answer, Job
from steer_away.server.methods import ServedMethods
from steer_away.server.settings import ServerSettings
from steer_away.server.streaming import IncrementalDetokenizer
from steer_away.server.validate import SEED_LIMIT

log = logging.getLogger("steer_away.server")
CHORE_MAX_WAIT_S = 30.0  # background work waits for an idle moment at most this long


class BatchingEngine:
    """One worker thread owns the model: it admits queued requests into the decode loop and steps it."""

    def __init__(self, lm: LanguageModel, served: ServedMethods, settings: ServerSettings) -> None:
        self.lm, self.served, self.settings = lm, served, settings
        self.policy = join_policy_named(settings.scheduler)
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=settings.max_queue)
        self.loop = self._new_loop()
        self._jobs: dict[DecodeRequest, Job] = {}
        self._streams: dict[DecodeRequest, IncrementalDetokenizer] = {}  # the streamed requests' text so far
        self.steps_run = 0
        self._sizes: list[int] = []  # requests in each step, the last 10,000
        self._sizes_offset = 0
        self.retried_alone = 0  # requests rerun on their own after a step they shared failed
        self.failed_alone = 0  # requests whose own part of a step failed (their batch-mates ran on)
        self.last_progress = time.monotonic()
        self.step_started: float | None = None  # when the step under way began (None between steps)
        self.cancelled_jobs = 0  # requests dropped or stopped because their client left
        self._chores: queue.Queue[tuple[float, Callable[[], Any], Future[Any]]] = queue.Queue()
        self._chore: tuple[float, Callable[[], Any], Future[Any]] | None = None  # the next one, waiting for a gap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="steer-away-engine", daemon=True)
        self._thread.start()

    def _new_loop(self) -> DecodeEngine:
        return DecodeEngine(self.lm, self.policy, self.settings.max_batch, self.settings.prefill_chunk)

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise APIError(429, "server is busy: request queue is full, retry later", "rate_limit_error") from None

    def between_steps(self, chore: Callable[[], Any]) -> Future[Any]:
        """Run `chore` on the worker thread, which owns the model, when no request is running or waiting
        (or, under unbroken load, once it has waited `CHORE_MAX_WAIT_S`): background work such as reading a
        user's activations from their feedback, which must not run beside a step from another thread (it
        would meet the step's hooks) and should not delay the answers."""
        future: Future[Any] = Future()
        self._chores.put((time.monotonic(), chore, future))
        return future

    def waiting(self) -> int:
        return self.queue.qsize()

    def running(self) -> int:
        return len(self._jobs)

    def step_sizes_since(self, mark: int) -> list[int]:
        """How many requests shared each step since step `mark` (a value of `steps_run`)."""
        return self._sizes[max(0, mark - self._sizes_offset):]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def alive(self) -> tuple[bool, float, float]:
        """(worker thread alive, seconds since it last made progress: a decoding step or an idle poll,
        seconds the step under way has run: 0 between steps)."""
        now, started = time.monotonic(), self.step_started
        return self._thread.is_alive(), now - self.last_progress, (now - started) if started is not None else 0.0

    # -- the worker --

    def _work(self) -> None:
        while not self._stop.is_set():
            self._run_chore()
            self._admit()
            if not self.loop.idle:
                self._step()

    def _run_chore(self) -> None:
        if self._chore is None:
            try:
                self._chore = self._chores.get_nowait()
            except queue.Empty:
                return
        since, chore, future = self._chore
        if not (self.loop.idle and self.queue.empty()) and time.monotonic() - since < CHORE_MAX_WAIT_S:
            return
        self._chore = None
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(chore())
            except Exception as err:  # the chore's caller reads it from the future
                future.set_exception(err)

    def _take(self, block: bool, timeout: float) -> Job | None:
        try:
            return self.queue.get(timeout=timeout) if block else self.queue.get_nowait()
        except queue.Empty:
            return None

    def _admit(self) -> None:
        """Move waiting requests into the loop, as many as the scheduler lets join now. With nothing
        running, wait a little for the first one and a batch window for company."""
        room = self.loop.room()
        if room <= 0:
            return
        idle = self.loop.idle
        first = self._take(idle, 0.1)
        self.last_progress = time.monotonic()
        if first is None:
            return
        jobs = [first]
        deadline = time.perf_counter() + (self.settings.batch_window_s if idle else 0.0)
        while len(jobs) < room:
            remaining = deadline - time.perf_counter()
            job = self._take(remaining > 0, max(remaining, 0.0))
            if job is None:
                break
            jobs.append(job)
        for job in jobs:
            if job.channel.cancelled.is_set():  # the client left while it was queued
                self.cancelled_jobs += 1
                continue
            request = None
            try:
                request = self._request(job)
                self.loop.add(request)  # the method prepares the request here: a bad category fails it alone
            except Exception as err:
                self._forget(request)
                self._fail(job, as_api_error(err, job.call.row.user_id))

    def _request(self, job: Job) -> DecodeRequest:
        # One read, at admission: a reload in between cannot mix two sets, and a rerun keeps this one.
        call, state = job.call, job.state
        method = state.bound if state.bound is not None else self.served.methods.get(call.method)
        state.bound = method
        if method is None:
            raise APIError(400, f"steering method '{call.method}' is not available on this server",
                           param="steering.method")
        if state.seed is None:
            state.seed = call.config.seed
        if call.config.do_sample and state.seed is None:  # our own: a rerun after a failed step draws the same text
            state.seed = secrets.randbelow(SEED_LIMIT)
        generator = None
        if state.seed is not None:  # greedy rows never draw from it; a method that samples anyway (rerank) does
            generator = torch.Generator(device=self.lm.device).manual_seed(state.seed)
        request = DecodeRequest(call.messages, method, call.row, call.config, generator=generator,
                                on_token=lambda _token: self._stream(request))
        self._jobs[request] = job
        if call.streamed:
            self._streams[request] = IncrementalDetokenizer(self.lm.tokenizer)
        return request

    def _step(self) -> None:
        for request, job in self._jobs.items():
            if job.channel.cancelled.is_set():
                self.loop.cancel(request)
        size = len(self.loop)
        self.step_started = time.monotonic()
        try:
            ended = self.loop.step()
        except Exception:
            self._recover()
            return
        finally:
            self.step_started = None
        self._count_step(size)
        for request in ended:
            self._deliver(request)

    def _count_step(self, size: int) -> None:
        self.last_progress = time.monotonic()
        self.steps_run += 1
        self._sizes.append(size)
        if len(self._sizes) > 10_000:
            self._sizes_offset += 5_000
            del self._sizes[:5_000]

    def _deliver(self, request: DecodeRequest) -> None:
        job = self._jobs.pop(request, None)
        self._streams.pop(request, None)
        if job is None:
            return
        if request.error is not None:  # its own part of a step failed; its batch-mates ran on
            self.failed_alone += 1
            err = request.error
            log.error("request for user %r failed alone: %s: %s", job.call.row.user_id,  # repr: no forged log lines
                      type(err).__name__, err, exc_info=err)
            self._fail(job, err if isinstance(err, APIError) else
                       APIError(500, f"generation failed for this request: {type(err).__name__}: {err}", "server_error"))
            return
        job.state.answered = True
        if request.finish_reason == "cancelled" or job.channel.cancelled.is_set():
            self.cancelled_jobs += 1
            return
        call, sent = job.call, job.state.sent
        text = cut_at_stop(self.lm.tokenizer.decode(request.tokens, skip_special_tokens=True), call.config.stop)
        if call.streamed:
            if not text.startswith(sent):  # never seen; a tokenizer whose pieces do not add up would do it
                log.warning("streamed text is not a prefix of the answer (%d characters sent)", len(sent))
            elif len(text) > len(sent):
                job.channel.send(text[len(sent):])
            job.channel.send(None)
        job.channel.settle(Answer(text.strip(), request.finish_reason or "length", call.prompt_tokens,
                                  len(request.tokens)))

    def _stream(self, request: DecodeRequest) -> None:
        """Send what the answer's text has grown by. A stop text is cut, and its possible beginnings held
        back until they are known not to be one; a rerun (after a failed step) sends nothing until it
        has passed the text already sent, and fails if it does not repeat it."""
        job, stream = self._jobs.get(request), self._streams.get(request)
        if job is None or not job.call.streamed or stream is None or job.channel.cancelled.is_set():
            return
        stream.push(request.tokens)
        stops, sent = job.call.config.stop, job.state.sent
        text = cut_at_stop(stream.text, stops)
        if stops and text == stream.text:  # no stop text yet: hold back what may be the start of one
            text = text[:len(text) - stop_prefix_length(text, stops)]
        shared = min(len(text), len(sent))
        if text[:shared] != sent[:shared]:
            raise RuntimeError("a rerun of this request did not repeat the text already streamed to its client")
        if len(text) > len(sent):
            job.channel.send(text[len(sent):])
            job.state.sent = text

    def _recover(self) -> None:
        """A step failed as a whole (the forward pass itself, not one request's part of it, which fails
        that request alone). Rows already answered or abandoned are done; every other request is
        rerun on its own, in a loop of its own. A rerun repeats its text (greedy, or sampled from its
        seed, which every sampled request has), so a stream carries on where it was."""
        ran_alone = len(self._jobs) == 1  # counted before dropping the answered and the departed
        jobs = [job for job in self._jobs.values() if not job.state.answered and not job.channel.cancelled.is_set()]
        log.exception("a decoding step failed as a whole; rerunning its %d unanswered requests one by one", len(jobs))
        self._jobs.clear()
        self._streams.clear()
        self.loop = self._new_loop()
        for job in jobs:
            if ran_alone:
                self._fail(job, APIError(500, "generation failed for this request", "server_error"))
                continue
            self.retried_alone += 1
            self._retry_alone(job)

    def _retry_alone(self, job: Job) -> None:
        """Run one request in a loop of its own, delivering or failing it."""
        alone = DecodeEngine(self.lm, prefill_chunk=self.settings.prefill_chunk)
        retry = None
        try:
            retry = self._request(job)
            alone.add(retry)
            while not alone.idle:
                if job.channel.cancelled.is_set():
                    alone.cancel(retry)
                self.step_started = time.monotonic()
                ended = alone.step()
                self.step_started = None
                self._count_step(1)
                for request in ended:
                    self._deliver(request)
        except APIError as err:
            self._forget(retry)
            self._fail(job, err)
        except Exception as err:
            log.exception("request for user %r failed", job.call.row.user_id)  # repr: an id cannot forge log lines
            self._forget(retry)
            self._fail(job, APIError(500, f"generation failed: {type(err).__name__}: {err}", "server_error"))
        finally:
            self.step_started = None

    def _forget(self, request: DecodeRequest | None) -> None:
        if request is not None:
            self._jobs.pop(request, None)
            self._streams.pop(request, None)

    def _fail(self, job: Job, err: APIError) -> None:
        job.state.answered = True
        job.channel.settle(err)
        job.channel.send(None)
