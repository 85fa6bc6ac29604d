"""The serving engine: one worker thread owns the model and decodes compatible requests as a batch.

Steering methods are built from the registry over one set of shared resources; a reload builds a
whole new set and swaps it in with one assignment, so a batch sees the old set or the new, never a
mix. Jobs that cannot join the current batch wait in the worker's own list, never back in the
shared queue: the worker is the queue's only consumer and must never block on it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from typing import Any

from steer_away.generation import GenerationConfig, generate, stop_token_ids
from steer_away.models import LanguageModel
from steer_away.server.api import APIError, Job, ServerSettings
from steer_away.steering.base import SteeringMethod
from steer_away.steering.registry import BASELINE, SteeringResources, build_method, get_method, method_names

log = logging.getLogger("steer_away.server")


class ServedMethods:
    """Every registered method built with its default arguments, or the reason it could not be."""

    def __init__(self, lm: LanguageModel, profiles: str | None, vectors: str | None, categories: str | None,
                 default_method: str | None) -> None:
        self.lm, self.profiles_path, self.vectors_path, self.categories_path = lm, profiles, vectors, categories
        self.requested_default = default_method
        self.methods: dict[str, SteeringMethod] = {}
        self.unavailable: dict[str, str] = {}
        self.default = BASELINE
        self.profiles: dict[str, Any] = {}
        self.categories: list[str] = []
        self.loaded_at = 0.0
        self.reload()

    def reload(self) -> None:
        """Rebuild from the files; on any error the previous set stays in service."""
        resources = SteeringResources(self.lm, profiles=self.profiles_path, vectors=self.vectors_path,
                                      categories=self.categories_path)
        profiles = resources.profiles()  # a broken profiles file fails the reload, not one method
        categories = sorted(resources.categories())
        methods: dict[str, SteeringMethod] = {}
        unavailable: dict[str, str] = {}
        for name in method_names():
            if get_method(name).needs.vector_bank is not None and self.vectors_path is None:
                unavailable[name] = "it needs vectors (start the server with --vectors)"
                continue
            try:
                methods[name] = build_method(name, None, resources)
            except (OSError, ValueError) as err:
                unavailable[name] = str(err)
        default = self.requested_default or self._automatic_default(methods)
        if default not in methods:
            raise ValueError(f"default method '{default}' is not available: "
                             f"{unavailable.get(default, 'not a registered method')}")
        self.methods, self.unavailable, self.default = methods, unavailable, default
        self.profiles, self.categories, self.loaded_at = profiles, categories, time.time()

    def _automatic_default(self, methods: dict[str, SteeringMethod]) -> str:
        """With vectors: the first method that steers each user with their own vector; else the baseline."""
        if self.vectors_path is not None:
            for name, method in methods.items():
                if get_method(name).needs.vector_bank is not None and method.personalised:
                    return name
            for name in methods:
                if get_method(name).needs.vector_bank is not None:
                    return name
        return BASELINE

    def availability(self) -> dict[str, str | None]:
        return {name: (None if name in self.methods else self.unavailable.get(name, "not built"))
                for name in method_names()}


class BatchingEngine:
    """One worker thread owns the model: it drains the queue into compatible batches and decodes them."""

    def __init__(self, lm: LanguageModel, served: ServedMethods, settings: ServerSettings) -> None:
        self.lm, self.served, self.settings = lm, served, settings
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=settings.max_queue)
        self._held: deque[Job] = deque()  # jobs taken off the queue that await a compatible batch
        self.batches_run = 0
        self.batch_sizes: list[int] = []
        self.last_progress = time.monotonic()
        self.cancelled_jobs = 0  # requests dropped or stopped because their client left
        self._stops = set(stop_token_ids(lm))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="steer-away-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise APIError(429, "server is busy: request queue is full, retry later", "rate_limit_error") from None

    def waiting(self) -> int:
        return self.queue.qsize() + len(self._held)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _next(self, timeout: float) -> Job | None:
        if self._held:
            return self._held.popleft()
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def alive(self) -> tuple[bool, float]:
        """(worker thread alive, seconds since it last made progress: a decoding step or an idle poll)."""
        return self._thread.is_alive(), time.monotonic() - self.last_progress

    def _collect(self) -> list[Job]:
        first = self._next(0.1)
        self.last_progress = time.monotonic()
        if first is None:
            return []
        batch = [first]
        # held jobs first (they waited longest), then whatever arrives within the batch window
        for job in list(self._held):
            if len(batch) >= self.settings.max_batch:
                break
            if job.batch_key() == first.batch_key():
                self._held.remove(job)
                batch.append(job)
        deadline = time.perf_counter() + self.settings.batch_window_s
        while len(batch) < self.settings.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                job = self.queue.get(timeout=remaining)
            except queue.Empty:
                break
            if job.batch_key() == first.batch_key():
                batch.append(job)
            else:
                self._held.append(job)
        left = [job for job in batch if job.cancelled.is_set()]  # clients that left while queued
        self.cancelled_jobs += len(left)
        return [job for job in batch if not job.cancelled.is_set()]

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        try:
            self._decode(batch)
        except Exception:  # isolate the failing request: rerun each alone
            log.exception("a batch of %d failed; retrying its requests one by one", len(batch))
            # Rows already answered or abandoned are done; a stream that already got part of its text
            # cannot be replayed without sending that part twice, so it fails; the rest run alone.
            pending = [job for job in batch if not job.answered and not job.cancelled.is_set()]
            retry = [job for job in pending if len(batch) > 1 and not job.streamed]
            for job in pending:
                if job not in retry:
                    self._fail(job, APIError(500, "generation failed for this request", "server_error"))
            for job in retry:
                try:
                    self._decode([job])
                except APIError as err:
                    self._fail(job, err)
                except Exception as err:
                    log.exception("request for user %s failed", job.row.user_id)
                    self._fail(job, APIError(500, f"generation failed: {type(err).__name__}: {err}", "server_error"))

    def _fail(self, job: Job, err: APIError) -> None:
        job.loop.call_soon_threadsafe(_settle, job.future, err)
        if job.stream is not None:
            job.loop.call_soon_threadsafe(job.stream.put_nowait, None)

    def _decode(self, batch: list[Job]) -> None:
        """Decode a batch; each row's answer is sent the step it ends, and rows whose client left
        stop at the next step, so a short request never waits for a long batch-mate."""
        served = self.served.methods  # one read: a reload in between cannot mix two sets
        name = batch[0].method
        if name not in served:
            raise APIError(400, f"steering method '{name}' is not available on this server",
                           param="steering.method")
        do_sample, temperature, top_p = batch[0].sampling
        config = GenerationConfig(max_new_tokens=max(j.max_tokens for j in batch), do_sample=do_sample,
                                  temperature=temperature, top_p=top_p)
        tokenizer = self.lm.tokenizer
        produced: list[list[int]] = [[] for _ in batch]
        sent: list[str] = ["" for _ in batch]
        ended = [False] * len(batch)

        def finish(i: int, reason: str) -> None:
            ended[i] = True
            job = batch[i]
            job.answered = True
            if job.cancelled.is_set():
                return
            ids = produced[i]
            if job.stream is not None:
                final = tokenizer.decode(ids, skip_special_tokens=True)
                if len(final) > len(sent[i]):
                    job.loop.call_soon_threadsafe(job.stream.put_nowait, final[len(sent[i]):])
                job.loop.call_soon_threadsafe(job.stream.put_nowait, None)
            payload = {"text": tokenizer.decode(ids, skip_special_tokens=True).strip(), "finish_reason": reason,
                       "prompt_tokens": job.prompt_tokens, "completion_tokens": len(ids)}
            job.loop.call_soon_threadsafe(_settle, job.future, payload)

        def on_step(tokens: list[int], finished: list[bool]) -> list[bool]:
            self.last_progress = time.monotonic()
            for i, job in enumerate(batch):
                if ended[i]:
                    continue
                if job.cancelled.is_set():
                    ended[i] = True
                    self.cancelled_jobs += 1
                    continue
                if tokens[i] in self._stops:
                    finish(i, "stop")
                    continue
                produced[i].append(tokens[i])
                if job.stream is not None:
                    text = tokenizer.decode(produced[i], skip_special_tokens=True)
                    if len(text) > len(sent[i]) and not text.endswith("\ufffd"):
                        job.loop.call_soon_threadsafe(job.stream.put_nowait, text[len(sent[i]):])
                        sent[i] = text
                        job.streamed = True
                if len(produced[i]) >= job.max_tokens:
                    finish(i, "length")
            return ended

        self.batch_sizes.append(len(batch))  # before decoding: answers are delivered as each row ends
        generate(self.lm, [j.messages for j in batch], method=served[name], rows=[j.row for j in batch],
                 config=config, on_step=on_step, seeds=[j.seed for j in batch] if do_sample else None)
        for i in range(len(batch)):
            if not ended[i]:
                finish(i, "length")
        self.batches_run += 1


def _settle(future: asyncio.Future[Any], value: object) -> None:
    if future.done():
        return
    if isinstance(value, Exception):
        future.set_exception(value)
    else:
        future.set_result(value)
