"""What the driver of a sweep writes to the results store: each batch as it comes, then a cell's summary.

Every runner (here, or Ray workers with whole cells or shards) feeds these, and only the driver calls
them: the store has one writer per sweep, and a crash loses at most the batches not yet handed over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from steer_away.evaluation.store import ResultsStore
from steer_away.evaluation.summary import CellSummary, summarise
from steer_away.evaluation.sweep.cells import Batch, EvalContext


def store_batches(store: ResultsStore, key: str, batches: Iterable[Batch], run_id: str,
                  progress: Callable[[int], Any]) -> None:
    for batch in batches:
        store.put_answers(key, batch.answers, run_id, batch.generated, batch.seconds)
        store.put_mmlu(key, batch.mmlu, run_id)
        store.claim(key)  # renew the lease
        progress(len(batch.answers) + len(batch.mmlu))


def cell_summary(store: ResultsStore, ctx: EvalContext, key: str) -> CellSummary:
    return summarise(store.answers(key), store.mmlu(key), ctx.sensitivity,
                     {u: p.primary() for u, p in ctx.profiles.items()}, utility_format=ctx.config.utility,
                     cost=store.generation_cost(key), tolerated={u: p.tolerated() for u, p in ctx.profiles.items()})


def finish_cell(store: ResultsStore, ctx: EvalContext, key: str) -> None:
    store.finish_cell(key, cell_summary(store, ctx, key))
    store.release(key)
