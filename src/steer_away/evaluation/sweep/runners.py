"""Running a sweep's pending cells, here or as shards on Ray workers (ray_runner.py); the driver
alone writes the store.

Both write through storing.py: every batch is committed to the results store as soon as the driver
has it, so a crash or Ctrl-C loses at most the batches in flight, and a rerun computes only what the
store does not have.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from steer_away.evaluation.store import CellSpec, ResultsStore
from steer_away.evaluation.sweep.artefacts import prepare
from steer_away.evaluation.sweep.cells import Batch, Cell, EvalContext, cell_work, compute_cell, missing_relevance
from steer_away.evaluation.sweep.config import SweepConfig
from steer_away.evaluation.sweep.ray_runner import run_on_ray
from steer_away.evaluation.sweep.shards import Shard
from steer_away.evaluation.sweep.storing import cell_summary, finish_cell, store_batches
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
    lost: list[Shard] = field(default_factory=list)  # shards lost with their Ray workers: the next run computes them


def _store_cell(store: ResultsStore, ctx: EvalContext, cell: Cell, batches: Iterable[Batch], run_id: str,
                progress: Callable[[int], Any]) -> None:
    store_batches(store, cell.key, batches, run_id, progress)
    finish_cell(store, ctx, cell.key)


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
            store.finish_cell(cell.key, cell_summary(store, ctx, cell.key))


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
    """Evaluate every cell not yet done; `ray_address` ('local' or 'ray://…') cuts them into shards
    computed by Ray workers."""
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
    lost: list[Shard] = []
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
            lost = run_on_ray(config, ctx, store, pending, take, run_id, bar.update, ray_address,
                              lambda cell: log.info(f"{cell.label} done; {clock.finished(cell.key)}"))
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
    if lost:
        log.warning(f"{len(lost)} shards ({sum(s.size for s in lost)} answers and questions) were lost with their "
                    "workers; run the sweep again to compute them (and nothing else)")
    if elsewhere:
        log.info(f"{len(elsewhere)} cells were being computed by another sweep on this store; left to it "
                      "(run again once it finishes to report them)")
    return SweepResult(cells, computed, skipped, ctx.fingerprint, time.perf_counter() - start, elsewhere, lost)
