"""A sweep spread over Ray: cells cut into shards, computed by long-lived workers, stored by the driver.

One worker (a Ray actor) per device slot loads the model and the evaluation context once and keeps
them for every shard it is given, of any cell. The driver hands out shards a worker at a time and
writes each returned shard to the store at once; it alone writes. A worker that dies (killed, out of
memory, its node gone) costs the shard it held: the shard goes to a fresh worker, up to
`shard_retries` times, and if it is still lost the cell stays unfinished, so the next run computes
exactly that shard's rows and nothing else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from steer_away.errors import InputError
from steer_away.evaluation.store import ResultsStore
from steer_away.evaluation.sweep.cells import Batch, Cell, EvalContext
from steer_away.evaluation.sweep.config import SweepConfig
from steer_away.evaluation.sweep.shards import Shard, compute_shard, pending_part, plan_shards
from steer_away.evaluation.sweep.storing import finish_cell, store_batches

log = logging.getLogger(__name__)


class ShardWorker:
    """The body of a Ray actor (wrapped by `ray.remote` at run time, so Ray stays optional)."""

    def __init__(self, raw: dict[str, Any], threads: int) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.ctx = EvalContext(SweepConfig.from_dict(raw))

    def pid(self) -> int:
        return os.getpid()

    def run(self, cell: Cell, shard: Shard) -> list[Batch]:
        return list(compute_shard(self.ctx, cell, shard))


@dataclass
class _Task:
    cell: Cell
    shard: Shard
    attempt: int = 0


def connect(address: str, workers: int) -> Any:
    """Ray, started here ('local': as many CPUs as workers) or joined at `address` ('ray://head:10001')."""
    try:
        import ray
    except ImportError as err:
        raise InputError("--ray needs Ray: pip install 'steer-away[ray]'") from err
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    return ray


def run_on_ray(config: SweepConfig, ctx: EvalContext, store: ResultsStore, pending: list[Cell],
               take: Callable[[Cell], bool], run_id: str, progress: Callable[[int], Any], address: str,
               cell_done: Callable[[Cell], None]) -> list[Shard]:
    """Compute the pending cells' missing shards; returns the shards lost for good (empty normally)."""
    ray = connect(address, config.ray_workers)
    remote: Any = ray.remote(num_cpus=1, num_gpus=config.ray_gpus)(ShardWorker)  # .remote() is invisible to mypy
    threads = 1 if not config.ray_gpus else 0  # one CPU each: one thread, or workers fight over cores
    queue: list[_Task] = []
    open_shards: dict[str, int] = {}  # cell key -> shards not yet stored
    stored: dict[str, int] = {}  # cell key -> answers and questions a run before this one stored
    for cell in pending:
        done_rows, done_q = store.done_rows(cell.key), store.done_questions(cell.key)
        todo = [p for s in plan_shards(ctx, cell, config.shard_batches) if (p := pending_part(s, done_rows, done_q)).size]
        stored[cell.key] = len(ctx.rows) + len(ctx.mmlu) - sum(s.size for s in todo)
        if not todo and take(cell):  # every shard stored, the summary not (a run stopped in between)
            progress(stored[cell.key])
            finish_cell(store, ctx, cell.key)
            cell_done(cell)
        queue += [_Task(cell, s) for s in todo]
        open_shards[cell.key] = len(todo)
    claimed: set[str] = set()
    lost: list[Shard] = []
    workers = [remote.remote(config.to_dict(), threads) for _ in range(min(config.ray_workers, len(queue)))]
    if workers:
        pids = ray.get([w.pid.remote() for w in workers])  # each has loaded the model once it answers
        log.info("%d Ray workers ready (pids %s); %d shards of %d cells to compute", len(workers),
                 ", ".join(map(str, pids)), len(queue), len(open_shards))
    futures: dict[Any, tuple[Any, _Task]] = {}

    def submit(worker: Any) -> None:
        while queue:
            task = queue.pop(0)
            key = task.cell.key
            if key not in claimed:
                if not take(task.cell):  # done meanwhile, or another sweep holds it
                    queue[:] = [t for t in queue if t.cell.key != key]
                    continue
                claimed.add(key)
                progress(stored[key])
            futures[worker.run.remote(task.cell, task.shard)] = (worker, task)
            return

    def settle(cell: Cell) -> None:
        open_shards[cell.key] -= 1
        if open_shards[cell.key] == 0:
            if any(s.cell_key == cell.key for s in lost):
                store.release(cell.key)  # unfinished: the next run computes the lost shards
            else:
                finish_cell(store, ctx, cell.key)
                cell_done(cell)

    for worker in workers:
        submit(worker)
    while futures:
        ready, _ = ray.wait(list(futures), num_returns=1)
        worker, task = futures.pop(ready[0])
        try:
            batches = ray.get(ready[0])
        except ray.exceptions.RayActorError as err:
            retry = task.attempt < config.shard_retries
            _report_death(task, err, retry)
            worker = remote.remote(config.to_dict(), threads)  # a fresh worker in its place
            if retry:
                queue.insert(0, _Task(task.cell, task.shard, task.attempt + 1))
            else:
                lost.append(task.shard)
                settle(task.cell)
        else:
            store_batches(store, task.cell.key, batches, run_id, progress)
            settle(task.cell)
        submit(worker)
    return lost


def _report_death(task: _Task, err: Exception, retry: bool) -> None:
    shard = task.shard
    log.warning("%s: the worker computing shard %d (%d answers, %d questions) died (%s); %s", task.cell.label,
                shard.index, len(shard.row_ids), len(shard.question_ids), type(err).__name__,
                "it goes to a fresh worker" if retry else "it is left for the next run")
