"""Shards of a cell on the tiny random model: what they cover, and that computing them one by one makes
the very batches, hence the very answers, of the unsharded cell."""

import pytest

from steer_away.evaluation.sweep import SweepConfig
from steer_away.evaluation.sweep.artefacts import prepare
from steer_away.evaluation.sweep.cells import EvalContext, compute_cell
from steer_away.evaluation.sweep.shards import compute_shard, pending_part, plan_shards
from tests.evaluation.test_sweep import config_dict

METHODS = [{"name": "unsteered"}, {"name": "caa-dislike", "alpha": [1.0]}, {"name": "eads", "alpha": [1.0]}]


@pytest.fixture(scope="module")
def ctx(tiny_model_dir, tmp_path_factory):
    config = SweepConfig.from_dict(config_dict(tiny_model_dir, tmp_path_factory.mktemp("shards") / "run", METHODS,
                                               prompts_per_category=2, batch_size=4, max_new_tokens=5))
    prepare(config, None)
    return EvalContext(config)


def test_shards_cover_every_row_and_question_once_and_never_split_a_prompt(ctx):
    for cell in ctx.cells():
        shards = plan_shards(ctx, cell, 2)
        rows = [r for s in shards for r in s.row_ids]
        questions = [q for s in shards for q in s.question_ids]
        assert sorted(rows) == sorted(r.row_id for r in ctx.rows)
        assert sorted(questions) == sorted(q.question_id for q in ctx.mmlu)
        assert [s.index for s in shards] == list(range(len(shards)))
        prompt_of = {r.row_id: r.prompt_id for r in ctx.rows}
        owner: dict[str, int] = {}
        for s in shards:
            for r in s.row_ids:
                assert owner.setdefault(prompt_of[r], s.index) == s.index, "a prompt's users were split"
        assert len(plan_shards(ctx, cell, 1)) > len(shards) > 1  # the size follows batches_per_shard


def test_a_shard_plan_does_not_depend_on_what_is_done(ctx):
    cell = ctx.cells()[1]
    plan = plan_shards(ctx, cell, 1)
    done = set(plan[0].row_ids[:2])
    part = pending_part(plan[0], done, set())
    assert part.row_ids == plan[0].row_ids[2:] and part.index == 0
    assert pending_part(plan[1], done, set()) == plan[1]
    with pytest.raises(ValueError, match="batches_per_shard"):
        plan_shards(ctx, cell, 0)


@pytest.mark.parametrize("method", ["unsteered", "caa-dislike", "eads"])
def test_computing_the_shards_one_by_one_gives_the_unsharded_cell(ctx, method):
    cell = next(c for c in ctx.cells() if c.method == method)
    whole = list(compute_cell(ctx, cell, set(), set()))
    sharded = [b for s in plan_shards(ctx, cell, 1) for b in compute_shard(ctx, cell, s)]
    # the same batches (a shard of one batch computes exactly that batch) ...
    assert [[a.row_id for a in b.answers] for b in sharded] == [[a.row_id for a in b.answers] for b in whole]
    assert [[m.question_id for m in b.mmlu] for b in sharded] == [[m.question_id for m in b.mmlu] for b in whole]
    # ... hence the same answers, scores and utility predictions
    for x, y in zip(sharded, whole):
        assert [(a.answer, a.toxicity, a.n_tokens) for a in x.answers] == [(a.answer, a.toxicity, a.n_tokens)
                                                                           for a in y.answers]
        assert [(m.predicted, m.user_id) for m in x.mmlu] == [(m.predicted, m.user_id) for m in y.mmlu]
