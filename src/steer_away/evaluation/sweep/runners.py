"""Running a sweep's pending cells, here or spread over Ray; the driver alone writes the store.

Both runners feed the same loop (:func:`_store_cell`): every batch a cell yields is committed to
the results store at once, so a crash or Ctrl-C loses at most the batch in flight, and a rerun
computes only what the store does not have.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from steer_away.errors import InputError
from steer_away.evaluation.store import CellSpec, ResultsStore
from steer_away.evaluation.summary import CellSummary, summarise
from steer_away.evaluation.sweep.artefacts import prepare
from steer_away.evaluation.sweep.cells import Batch, Cell, EvalContext, cell_work, compute_cell, missing_relevance
from steer_away.evaluation.sweep.config import SweepConfig
from steer_away.models import LanguageModel

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    cells: list[Cell]
    computed: list[str]
    skipped: list[str]
    fingerprint: str
    seconds: float
    elsewhere: list[str]  # cells another sweep on the same store was computing


def _store_cell(store: ResultsStore, ctx: EvalContext, cell: Cell, batches: Iterable[Batch], run_id: str,
                progress: Callable[[int], Any]) -> None:
    for batch in batches:
        store.put_answers(cell.key, batch.answers, run_id, batch.generated, batch.seconds)
        store.put_mmlu(cell.key, batch.mmlu, run_id)
        store.claim(cell.key)  # renew the lease
        progress(len(batch.answers) + len(batch.mmlu))
    store.finish_cell(cell.key, _summary(store, ctx, cell.key))
    store.release(cell.key)


def _summary(store: ResultsStore, ctx: EvalContext, key: str) -> CellSummary:
    return summarise(store.answers(key), store.mmlu(key), ctx.sensitivity,
                     {u: p.primary() for u, p in ctx.profiles.items()}, utility_format=ctx.config.utility,
                     cost=store.generation_cost(key), tolerated={u: p.tolerated() for u, p in ctx.profiles.items()})


def _fill_in(store: ResultsStore, ctx: EvalContext, cells: list[Cell]) -> None:
    """What a store written by an earlier version lacks, computed from what it holds (nothing is generated
    again): the relevance of its answers, and the users' tolerated TOXICITY in finished cells' summaries."""
    done = {c.key: c for c in store.cells()}
    for cell in cells:
        unscored = store.without_relevance(cell.key)
        if unscored:
            log.info(f"{cell.label}: scoring the relevance of {len(unscored)} stored answers")
            store.set_relevance(cell.key, missing_relevance(ctx, unscored))
        summary = done[cell.key].summary if cell.key in done else None
        if summary is not None and not summary.tolerated_toxicity and summary.preferred_toxicity:
            store.finish_cell(cell.key, _summary(store, ctx, cell.key))


class SweepClock:
    """The time estimate a long sweep prints: after each finished cell, the time left at the rate this
    run has measured so far (forward-pass rows per second, with each method's branches counted)."""

    def __init__(self, work: dict[str, int]) -> None:
        self.work, self.done, self.start = dict(work), 0, time.perf_counter()

    def finished(self, key: str) -> str:
        self.done += self.work.pop(key, 0)
        elapsed = time.perf_counter() - self.start
        left = sum(self.work.values())
        if not self.done or not left:
            return f"{elapsed / 60:.1f} min so far"
        return (f"{elapsed / 60:.1f} min so far; about {elapsed * left / self.done / 60:.0f} min left for "
                f"{len(self.work)} cells (at this run's measured rate)")


def run_sweep(config: SweepConfig, *, ray_address: str | None = None, lm: LanguageModel | None = None,
              show_progress: bool = True) -> SweepResult:
    """Evaluate every cell not yet done; `ray_address` ('local' or 'ray://…') spreads cells over Ray."""
    start = time.perf_counter()
    prepare(config, lm)
    ctx = EvalContext(config, lm)
    store = ResultsStore(config.run_dir / "results.sqlite")
    cells = ctx.cells()
    for cell in cells:
        store.register_cell(cell.key, cell.method, cell.alpha, cell.settings,
                            CellSpec(ctx.fingerprint, cell.args.identity(), cell.label))
    _fill_in(store, ctx, cells)
    pending = [c for c in cells if store.cell_status(c.key) != "done"]
    skipped = [c.key for c in cells if c not in pending]
    if skipped:
        log.info(f"{len(skipped)} of {len(cells)} cells already done; computing {len(pending)}")
    run_id = uuid.uuid4().hex[:8]
    clock = SweepClock({c.key: cell_work(ctx, c, store.done_rows(c.key), store.done_questions(c.key))
                        for c in pending})
    bar = tqdm(total=(len(ctx.rows) + len(ctx.mmlu)) * len(pending), desc="sweep", unit="item",
               disable=not show_progress)
    computed: list[str] = []
    elsewhere: list[str] = []  # cells a live sweep on the same store holds: left to it

    def take(cell: Cell) -> bool:
        """Claim a cell just before computing it, so concurrent sweeps split the work."""
        if store.cell_status(cell.key) == "done":
            clock.work.pop(cell.key, None)
            return False
        if not store.claim(cell.key):
            clock.work.pop(cell.key, None)  # another sweep's work: not this run's time left
            elsewhere.append(cell.key)
            bar.update(len(ctx.rows) + len(ctx.mmlu))
            return False
        computed.append(cell.key)
        return True

    try:
        if ray_address:
            _run_on_ray(config, ctx, store, pending, take, run_id, bar.update, ray_address, clock)
        else:
            for cell in pending:
                if not take(cell):
                    continue
                bar.set_postfix_str(cell.label)
                done_rows, done_q = store.done_rows(cell.key), store.done_questions(cell.key)
                bar.update(len(done_rows) + len(done_q))
                _store_cell(store, ctx, cell, compute_cell(ctx, cell, done_rows, done_q), run_id, bar.update)
                log.info(f"{cell.label} done; {clock.finished(cell.key)}")
    finally:
        bar.close()
        store.close()
    if elsewhere:
        log.info(f"{len(elsewhere)} cells were being computed by another sweep on this store; left to it "
                      "(run again once it finishes to report them)")
    return SweepResult(cells, computed, skipped, ctx.fingerprint, time.perf_counter() - start, elsewhere)


def _run_on_ray(config: SweepConfig, ctx: EvalContext, store: ResultsStore, pending: list[Cell],
                take: Callable[[Cell], bool], run_id: str, progress: Callable[[int], Any], address: str,
                clock: SweepClock) -> None:
    """Each Ray actor builds its own EvalContext from the config and returns a cell's batches."""
    try:
        import ray
    except ImportError as err:
        raise InputError("--ray needs Ray: pip install 'steer-away[ray]'") from err
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=max(1, config.ray_workers), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class CellWorker:
        def __init__(self, raw: dict[str, Any]) -> None:
            import torch

            torch.set_num_threads(1)
            self.ctx = EvalContext(SweepConfig.from_dict(raw))

        def run(self, cell: Cell, done_rows: set[str], done_q: set[str]) -> list[Batch]:
            return list(compute_cell(self.ctx, cell, done_rows, done_q))

    actor: Any = CellWorker  # ray.remote adds .remote(), which the type checker cannot see
    workers = [actor.remote(config.to_dict()) for _ in range(max(1, min(config.ray_workers, len(pending))))]
    futures: dict[Any, tuple[Any, Cell]] = {}
    queue = list(pending)

    def submit(worker: Any) -> None:
        while queue:
            cell = queue.pop(0)
            if take(cell):
                futures[worker.run.remote(cell, store.done_rows(cell.key), store.done_questions(cell.key))] = \
                    (worker, cell)
                return

    for worker in workers:
        submit(worker)
    while futures:
        ready, _ = ray.wait(list(futures), num_returns=1)
        worker, cell = futures.pop(ready[0])
        _store_cell(store, ctx, cell, ray.get(ready[0]), run_id, progress)
        log.info(f"{cell.label} done; {clock.finished(cell.key)}")
        submit(worker)
