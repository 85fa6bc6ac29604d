"""A cell cut into shards: runs of whole batches, so that several workers can share one cell.

A shard is a run of consecutive batches of the cell's own batch plan (the batches an unsharded run
makes: `by_prompt` over every row), and of consecutive `batch_size` chunks of its utility questions.
Because a batch never splits a prompt's answers, a shard holds every user of its prompts, and answers
that several users share stay shared. Because the batching is greedy and starts afresh at every shard
boundary, a worker that computes a shard alone makes the very batches the unsharded run makes there:
the same forward passes, hence the same answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from steer_away.evaluation.sweep.cells import Batch, Cell, EvalContext, answer_units, by_prompt, compute_cell


@dataclass(frozen=True)
class Shard:
    cell_key: str
    index: int
    row_ids: tuple[str, ...]  # answer rows, in the cell's order
    question_ids: tuple[str, ...]  # utility questions

    @property
    def size(self) -> int:
        return len(self.row_ids) + len(self.question_ids)


def plan_shards(ctx: EvalContext, cell: Cell, batches_per_shard: int) -> list[Shard]:
    """The cell's shards, the same on every worker and on every run (they depend on the rows, the
    method's answer groups and the batch size, never on what is done)."""
    if batches_per_shard < 1:
        raise ValueError(f"batches_per_shard must be >= 1, got {batches_per_shard}")
    method = ctx.method(cell)
    size = ctx.config.batch_size
    batches = [tuple(row.row_id for _, _, rows in chunk for row in rows)
               for chunk in by_prompt(answer_units(method, ctx.rows), size)]
    questions = [tuple(q.question_id for q in ctx.mmlu[i:i + size]) for i in range(0, len(ctx.mmlu), size)]
    shards: list[Shard] = []
    for start in range(0, len(batches), batches_per_shard):
        rows = tuple(r for batch in batches[start:start + batches_per_shard] for r in batch)
        shards.append(Shard(cell.key, len(shards), rows, ()))
    for start in range(0, len(questions), batches_per_shard):
        ids = tuple(q for chunk in questions[start:start + batches_per_shard] for q in chunk)
        shards.append(Shard(cell.key, len(shards), (), ids))
    return shards


def pending_part(shard: Shard, done_rows: set[str], done_questions: set[str]) -> Shard:
    """What of a shard is still to compute (the whole shard, unless a run stopped while storing it)."""
    return Shard(shard.cell_key, shard.index, tuple(r for r in shard.row_ids if r not in done_rows),
                 tuple(q for q in shard.question_ids if q not in done_questions))


def compute_shard(ctx: EvalContext, cell: Cell, shard: Shard) -> Iterator[Batch]:
    """The batches of one shard: the cell's computation with every row and question outside it counted
    as done."""
    rows, questions = set(shard.row_ids), set(shard.question_ids)
    return compute_cell(ctx, cell, {r.row_id for r in ctx.rows if r.row_id not in rows},
                        {q.question_id for q in ctx.mmlu if q.question_id not in questions})
