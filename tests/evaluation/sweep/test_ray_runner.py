"""A sweep sharded over two Ray workers (Ray started here, 'local'), on the tiny random model: the same
store as the unsharded run, and a worker killed with SIGKILL costs its shard and nothing else."""

import logging
import os
import re
import signal

import pytest

from steer_away.evaluation.store import ResultsStore
from steer_away.evaluation.sweep import SweepConfig, ray_runner, run_sweep
from tests.evaluation.test_sweep import config_dict

ray = pytest.importorskip("ray")

METHODS = [{"name": "unsteered"}, {"name": "caa-dislike", "alpha": [1.0]}, {"name": "eads", "alpha": [1.0]}]


@pytest.fixture(scope="module")
def local_ray():
    yield
    ray.shutdown()


def raw(model_dir, out, **extra):
    return config_dict(model_dir, out, METHODS, prompts_per_category=2, batch_size=4, max_new_tokens=12,
                       shard_batches=1, **extra)


def stored(folder):
    """Every answer and utility prediction of every cell, by method (cell keys are equal across runs)."""
    store = ResultsStore(folder / "results.sqlite")
    out = {c.method: ({a.row_id: (a.answer, a.toxicity, a.n_tokens, a.relevance) for a in store.answers(c.key)},
                      {m.question_id: (m.predicted, m.user_id) for m in store.mmlu(c.key)}, c.status)
           for c in store.cells(only_done=False)}
    store.close()
    return out


@pytest.fixture(scope="module")
def unsharded(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("unsharded") / "run"
    run_sweep(SweepConfig.from_dict(raw(tiny_model_dir, folder)), show_progress=False)
    return stored(folder)


def kill_a_worker_after_the_first_shard(monkeypatch, caplog):
    """SIGKILL one worker process once the driver has stored the first shard; returns what was killed."""
    killed: list[int] = []
    real = ray_runner.store_batches

    def store_then_kill(*args, **kwargs):
        real(*args, **kwargs)
        if not killed:
            ready = next(r.getMessage() for r in caplog.records if "Ray workers ready" in r.getMessage())
            pid = int(re.search(r"pids (\d+)", ready).group(1))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    monkeypatch.setattr(ray_runner, "store_batches", store_then_kill)
    return killed


def test_a_sharded_sweep_stores_what_the_unsharded_one_does(local_ray, unsharded, tiny_model_dir, tmp_path):
    result = run_sweep(SweepConfig.from_dict(raw(tiny_model_dir, tmp_path / "run")), ray_address="local",
                       show_progress=False)
    assert len(result.computed) == 3 and not result.lost
    assert stored(tmp_path / "run") == unsharded


def test_a_killed_worker_costs_its_shard_which_the_next_run_computes_alone(local_ray, unsharded, tiny_model_dir,
                                                                            tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="steer_away")
    config = SweepConfig.from_dict(raw(tiny_model_dir, tmp_path / "run", shard_retries=0))
    killed = kill_a_worker_after_the_first_shard(monkeypatch, caplog)
    first = run_sweep(config, ray_address="local", show_progress=False)
    monkeypatch.undo()
    assert killed and first.lost, "the kill cost no shard"
    lost_questions = {q for s in first.lost for q in s.question_ids}
    assert any("died" in r.getMessage() and "left for the next run" in r.getMessage() for r in caplog.records)
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    unfinished = {c.key for c in store.cells(only_done=False) if c.status != "done"}
    assert unfinished == {s.cell_key for s in first.lost}
    before = {c.key: store.answer_provenance(c.key) for c in store.cells(only_done=False)}
    method_of = {c.key: c.method for c in store.cells(only_done=False)}
    lost_of = {key: {r for s in first.lost if s.cell_key == key for r in s.row_ids} for key in before}
    for key in unfinished:  # what is missing is exactly the lost shards
        assert set(unsharded[method_of[key]][0]) - set(before[key]) == lost_of[key]
    store.close()

    again = run_sweep(config, ray_address="local", show_progress=False)
    assert not again.lost and set(again.computed) == unfinished
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    for key, rows in before.items():
        now = store.answer_provenance(key)
        assert all(now[r] == rows[r] for r in rows)  # nothing stored was computed again
        assert set(now) - set(rows) == lost_of[key]  # and only the lost rows were
    assert lost_questions <= {q for k in before for q in store.done_questions(k)}
    store.close()
    assert stored(tmp_path / "run") == unsharded  # and the result is the unsharded one


def test_a_killed_worker_s_shard_goes_to_a_fresh_worker(local_ray, unsharded, tiny_model_dir, tmp_path, monkeypatch,
                                                         caplog):
    caplog.set_level(logging.INFO, logger="steer_away")
    killed = kill_a_worker_after_the_first_shard(monkeypatch, caplog)
    result = run_sweep(SweepConfig.from_dict(raw(tiny_model_dir, tmp_path / "run")), ray_address="local",
                       show_progress=False)
    assert killed and not result.lost and len(result.computed) == 3
    assert any("goes to a fresh worker" in r.getMessage() for r in caplog.records)
    assert stored(tmp_path / "run") == unsharded
