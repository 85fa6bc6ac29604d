"""Sweeps on the tiny random model and our fixture: resume, new cells only, reports (Ray: sweep/test_ray_runner.py)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from steer_away.errors import InputError
from steer_away.evaluation.report import write_report
from steer_away.evaluation.store import ResultsStore
from steer_away.evaluation.sweep import SweepConfig, SweepConfigError, run_sweep
from steer_away.profiles import load_profiles


def config_dict(model_dir, out, methods=None, **extra):
    sweep = {"name": "t", "out": str(out), "model": str(model_dir), "device": "cpu", "users_per_sensitivity": 1,
             "prompts_per_category": 1, "max_new_tokens": 6, "batch_size": 4, "n_pairs": 24,
             "mmlu_limit": 6, "ray_workers": 2, **extra}
    methods = methods or [{"name": "unsteered"}, {"name": "caa-population", "alpha": [0.5]},
                          {"name": "caa-dislike", "alpha": [1.0]}, {"name": "eads", "alpha": [1.0]}]
    return {"sweep": sweep, "methods": methods}


def write_toml(path, raw):
    def value(v):
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    lines = ["[sweep]"] + [f"{k} = {value(v)}" for k, v in raw["sweep"].items()]
    for m in raw["methods"]:
        lines += ["", "[[methods]]"] + [f"{k} = {value(v)}" for k, v in m.items()]
    path.write_text("\n".join(lines) + "\n")


def test_sweep_store_and_report(tiny_model_dir, tmp_path):
    config = SweepConfig.from_dict(config_dict(tiny_model_dir, tmp_path / "run"))
    result = run_sweep(config, show_progress=False)
    assert len(result.computed) == 4 and not result.skipped
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    cells = store.cells()
    assert len(cells) == 4 and all(c.status == "done" for c in cells)
    rows = store.answers(cells[0].key)
    # 3 users (one per sensitivity) x 4 categories (one prompt each)
    assert len(rows) == 12 and {r.category for r in rows} == {"benign_control", "context_dependent",
                                                              "harmful_borderline", "safe_sensitive"}
    assert all(len(store.mmlu(c.key)) == 6 for c in cells)
    tables = write_report(tmp_path / "run" / "results.sqlite", tmp_path / "report")
    by_method = {r.method: r for r in tables.main}
    base = by_method["unsteered"].mae
    eads = by_method["eads"]
    assert eads.delta_pct == pytest.approx(100 * (eads.mae - base) / base)
    for name in ("report.md", "main.csv", "categories.csv", "sweep.png"):
        assert (tmp_path / "report" / name).stat().st_size > 100
    assert (tmp_path / "report" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    summary = cells[0].done_summary
    assert set(summary.toxicity_by_sensitivity) == {"strict", "moderate", "tolerant"}
    # the headline: |TOXICITY − the user's preferred TOXICITY|, recomputed by hand from the stored rows
    import json

    profiles = {p["user_id"]: p["preferred_toxicity"][0]
                for p in json.loads((tmp_path / "run" / "profiles.json").read_text())["profiles"]}
    for c in cells:
        answers = store.answers(c.key)
        by_hand = sum(abs(a.toxicity[0] - profiles[a.user_id]) for a in answers) / len(answers)
        assert by_method[c.method].tox_dist == pytest.approx(by_hand)
    for name in ("categories.png", "change_sources.csv", "sensitivity_effects.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 100
    # relevance is scored with every answer, and the guards read it
    assert all(a.relevance == a.relevance for a in rows if a.answer.strip())  # not NaN
    assert "relevance" in (tmp_path / "report" / "main.csv").read_text().splitlines()[0]
    assert (tmp_path / "report" / "guards.csv").stat().st_size > 100
    # a rerun computes nothing
    again = run_sweep(config, show_progress=False)
    assert again.computed == [] and len(again.skipped) == 4


def test_a_store_written_before_relevance_and_tolerance_gets_them_without_generating_again(tiny_model_dir, tmp_path):
    config = SweepConfig.from_dict(config_dict(tiny_model_dir, tmp_path / "run",
                                               [{"name": "unsteered"}, {"name": "caa-population"}]))
    run_sweep(config, show_progress=False)
    path = tmp_path / "run" / "results.sqlite"
    store = ResultsStore(path)
    keys = [c.key for c in store.cells()]
    scored = {k: {a.row_id: a.relevance for a in store.answers(k)} for k in keys}
    provenance = {k: store.answer_provenance(k) for k in keys}
    store.close()
    with sqlite3.connect(path) as db:  # as an older version left it: no relevance, no tolerance in the summaries
        db.execute("UPDATE answers SET relevance = NULL")
        for key, raw in db.execute("SELECT key, summary FROM cells").fetchall():
            summary = json.loads(raw)
            summary.pop("tolerated_toxicity")
            db.execute("UPDATE cells SET summary = ? WHERE key = ?", (json.dumps(summary), key))
    again = run_sweep(config, show_progress=False)
    store = ResultsStore(path)
    assert again.computed == [] and all(store.answer_provenance(k) == provenance[k] for k in keys)
    for k in keys:
        assert {a.row_id: a.relevance for a in store.answers(k)} == pytest.approx(scored[k], nan_ok=True)
    assert all(c.done_summary.tolerated_toxicity for c in store.cells())


def test_changed_config_computes_only_new_cells(tiny_model_dir, tmp_path):
    raw = config_dict(tiny_model_dir, tmp_path / "run", methods=[{"name": "unsteered"},
                                                                 {"name": "eads", "alpha": [1.0]}])
    first = run_sweep(SweepConfig.from_dict(raw), show_progress=False)
    raw["methods"][1]["alpha"] = [1.0, 2.0]
    second = run_sweep(SweepConfig.from_dict(raw), show_progress=False)
    assert len(second.computed) == 1 and set(second.skipped) == set(first.computed)


def test_killed_sweep_resumes_without_recomputing_or_losing(tiny_model_dir, tmp_path):
    raw = config_dict(tiny_model_dir, tmp_path / "run", max_new_tokens=24,
                      methods=[{"name": "unsteered"}, {"name": "eads", "alpha": [0.5, 1.0, 2.0, 3.0]},
                               {"name": "acd", "alpha": [0.5, 1.0]}])
    path = tmp_path / "sweep.toml"
    write_toml(path, raw)
    db = tmp_path / "run" / "results.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "steer_away.cli", "sweep", "--config", str(path), "--no-ppa"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    done_before = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.is_file():
                with sqlite3.connect(db) as con:
                    try:
                        done_before = con.execute("SELECT COUNT(*) FROM cells WHERE status='done'").fetchone()[0]
                    except sqlite3.OperationalError:
                        done_before = 0
                if done_before >= 2:
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert done_before >= 2, "the sweep did not get far enough to be killed mid-way"
    store = ResultsStore(db)
    finished = {c.key: c for c in store.cells()}
    assert 2 <= len(finished) < 7, "kill came too late to test resuming"
    provenance = {key: store.answer_provenance(key) for key in finished}
    partial = {c.key: store.answer_provenance(c.key) for c in store.cells(only_done=False)
               if c.key not in finished}
    store.close()

    result = run_sweep(SweepConfig.from_dict(raw), show_progress=False)
    assert set(result.skipped) == set(finished)  # finished cells were not recomputed
    store = ResultsStore(db)
    assert len(store.cells()) == 7  # and none is lost
    for key, rows in provenance.items():
        assert store.answer_provenance(key) == rows  # same rows, same run, same timestamps
    for key, rows in partial.items():  # rows of the interrupted cell were kept, not redone
        now = store.answer_provenance(key)
        assert all(now[r] == rows[r] for r in rows)
        assert len(now) == 12
    assert all(len(store.answers(c.key)) == 12 for c in store.cells())


@pytest.mark.parametrize("raw, message", [
    ({"sweep": {"nme": "x"}, "methods": [{"name": "unsteered"}]}, r"unknown key \[sweep\].nme"),
    ({"sweep": {}, "methods": [{"name": "magic"}]}, "unknown steering method 'magic'"),
    ({"sweep": {}, "methods": [{"name": "eads", "alpha": [float("nan")]}]}, "non-finite"),
    ({"sweep": {}, "methods": [{"name": "eads", "alphas": [1.0]}]}, "unknown argument 'alphas'; did you mean 'alpha'"),
    ({"sweep": {}, "methods": [{"name": "eads", "layers": "seed"}]}, "unknown argument 'layers'"),
    ({"sweep": {}, "methods": [{"name": "caa-population", "gate": [0]}]}, "gate must be"),
    ({"sweep": {}, "methods": [{"name": "caa-population", "layers": "20-15"}]}, "empty or negative"),
    ({"sweep": {}, "methods": []}, "no \\[\\[methods\\]\\]"),
    ({"sweep": {"utility": "essay"}, "methods": [{"name": "unsteered"}]}, r"\[sweep\].utility is 'essay'"),
    ({"sweep": {"shard_batches": 0}, "methods": [{"name": "unsteered"}]}, r"shard_batches must be at least 1"),
    ({"sweep": {"ray_gpus": -1}, "methods": [{"name": "unsteered"}]}, r"ray_gpus must be at least 0"),
    ({"sweep": {"prompts": "nowhere.jsonl"}, "methods": [{"name": "unsteered"}]}, "names nowhere.jsonl, which is not"),
])
def test_bad_configs(raw, message):
    with pytest.raises(SweepConfigError, match=message):
        SweepConfig.from_dict(raw, "sweep.toml")


def test_alpha_from_a_calibration_file(tmp_path):
    import json

    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "calibration.json").write_text(json.dumps({"recommended": 0.75, "summary": "ok"}))
    (tmp_path / "none.json").write_text(json.dumps({"recommended": None, "summary": "no α moved TOXICITY"}))
    raw = {"sweep": {"name": "t"}, "methods": [{"name": "caa-population", "alpha": ["cal/calibration.json", 0.25]}]}
    config = SweepConfig.from_dict(raw, str(tmp_path / "sweep.toml"))
    assert [a.alpha for a in config.methods[0].expand()] == [0.75, 0.25]
    raw["methods"][0]["alpha"] = "none.json"
    with pytest.raises(SweepConfigError, match="recommends no α .no α moved TOXICITY"):
        SweepConfig.from_dict(raw, str(tmp_path / "sweep.toml"))
    raw["methods"][0]["alpha"] = "missing.json"
    with pytest.raises(SweepConfigError, match="cannot read the calibration"):
        SweepConfig.from_dict(raw, str(tmp_path / "sweep.toml"))


def test_rows_steered_alike_share_one_answer(tiny_model_dir, tmp_path):
    """Unsteered answers each prompt once for everyone, EADS once per sensitivity group, CAA with
    per-user vectors once per user; the store still holds one row per (user, prompt)."""
    config = SweepConfig.from_dict(config_dict(tiny_model_dir, tmp_path / "run", prompts="shipped",
                                               users_per_sensitivity=2, methods=[
                                                   {"name": "unsteered"}, {"name": "eads", "alpha": [4.0]}]))
    run_sweep(config, show_progress=False)
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    cells = {c.method: c for c in store.cells()}
    group = {u: p.sensitivity for u, p in load_profiles(tmp_path / "run" / "profiles.json").items()}
    for method, key in [("unsteered", lambda a: a.prompt_id), ("eads", lambda a: (a.prompt_id, group[a.user_id]))]:
        answers = store.answers(cells[method].key)
        assert len(answers) == 4 * 6  # 4 shipped prompts (one per category) x 6 users
        texts: dict = {}
        for a in answers:
            texts.setdefault(key(a), set()).add(a.answer)
        assert all(len(v) == 1 for v in texts.values())
    eads = store.answers(cells["eads"].key)
    assert len({(a.prompt_id, a.answer) for a in eads}) > 4  # groups were steered differently


def test_a_prompt_file_with_a_training_prompt_is_refused(tiny_model_dir, tmp_path):
    from steer_away.data.prism import load_prism
    from steer_away.data.prompts import PromptOverlapError, PromptSplit

    train, _ = PromptSplit().pairs(load_prism(None).turns)
    path = tmp_path / "mine.txt"
    path.write_text("A question nobody trained on?\n" + train[0].opening + "\n")
    config = SweepConfig.from_dict(config_dict(tiny_model_dir, tmp_path / "run", prompts=str(path)))
    with pytest.raises(PromptOverlapError, match="1 evaluation prompt"):
        run_sweep(config, show_progress=False)


def test_sweep_clock_projects_the_time_left_from_the_measured_rate(monkeypatch):
    from steer_away.evaluation.sweep import runners

    now = [100.0]
    monkeypatch.setattr(runners.time, "perf_counter", lambda: now[0])
    clock = runners.SweepClock({"a": 100, "b": 300, "c": 200})
    now[0] += 120.0  # 100 units in 2 minutes
    assert clock.finished("a") == "2.0 min so far; about 10 min left for 2 cells (at this run's measured rate)"
    now[0] += 360.0  # 300 more units in 6 minutes: still 1 unit / 1.2 s
    assert clock.finished("b").endswith("about 4 min left for 1 cells (at this run's measured rate)")
    now[0] += 60.0
    assert clock.finished("c") == "9.0 min so far"


def test_answer_units_group_rows_the_method_steers_alike():
    from types import SimpleNamespace

    import torch

    from steer_away.evaluation.sweep.cells import EvalRow, answer_units
    from steer_away.steering.framework.method import RowSteering, SteeringMethod
    from steer_away.steering.methods.activation import ActivationSteering
    from steer_away.steering.methods.logits import EADS
    from steer_away.steering.vectors.vector import SteeringVector

    def vector(seed):
        g = torch.Generator().manual_seed(seed)
        return SteeringVector({1: torch.randn(32, generator=g)}, model_id="m", hidden_size=32, num_layers=4)

    users = ["u0", "u1", "x", "y"]
    rows = [EvalRow(f"{u}|{p}", u, p, f"prompt {p}", "benign_control") for p in ("p1", "p2") for u in users]
    per_user = ActivationSteering({"u0": vector(0), "u1": vector(1)}, alpha=1.0, default=vector(2))
    units = answer_units(per_user, rows)  # u0, u1 alone; x and y (no vector) share the default
    assert sorted(len(served) for _, _, served in units) == [1, 1, 1, 1, 2, 2]
    population = ActivationSteering(vector(2), alpha=1.0)
    assert [len(served) for _, _, served in answer_units(population, rows)] == [4, 4]
    profiles = {"u0": SimpleNamespace(sensitivity="strict"), "u1": SimpleNamespace(sensitivity="strict"),
                "x": SimpleNamespace(sensitivity="tolerant"), "y": SimpleNamespace(sensitivity="moderate")}
    eads = EADS(profiles=profiles)
    assert sorted(len(served) for _, _, served in answer_units(eads, rows)) == [1, 1, 1, 1, 2, 2]
    assert eads.answer_group(RowSteering("u0")) != eads.answer_group(RowSteering("u0", alpha=0.1))

    class Forgetful(SteeringMethod):  # personalised, no answer_group of its own: never shares across users
        personalised = True

        def prepare(self, lm, conversations, rows):
            raise NotImplementedError

    assert [len(served) for _, _, served in answer_units(Forgetful(), rows)] == [1] * 8


def test_a_sweep_scored_by_a_hugging_face_classifier_refuses_profiles_of_another_scorer(tiny_model_dir, tmp_path):
    """`scorer = "hf:<folder>"` (a synthetic tiny binary classifier) scores profiles and answers; the same run
    folder with another scorer is refused rather than mixing scores (profiles and vectors stand on them)."""
    from tests.scoring.tiny_classifier import save_classifier

    folder = save_classifier(tmp_path / "tiny-tox", ("neutral", "toxic"))
    raw = config_dict(tiny_model_dir, tmp_path / "run", [{"name": "unsteered"}], scorer=f"hf:{folder}")
    result = run_sweep(SweepConfig.from_dict(raw), show_progress=False)
    profiles = json.loads((tmp_path / "run" / "profiles.json").read_text())
    assert profiles["scorer"].startswith("hf:tiny-tox@sha256:")
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    answers = store.answers(result.computed[0])
    assert answers and all(len(a.toxicity) == 1 and 0.0 <= a.toxicity[0] <= 1.0 for a in answers)
    raw["sweep"]["scorer"] = "jigsaw-bilstm"
    with pytest.raises(InputError, match="was scored by hf:tiny-tox"):
        run_sweep(SweepConfig.from_dict(raw), show_progress=False)


def test_a_run_folder_whose_profiles_name_no_scorer_is_refused_in_words(tmp_path):
    """profiles.json without a `scorer` field (written by hand or by an old version): the refusal says so."""
    from steer_away.evaluation.sweep.artefacts import prepare
    from tests.scoring.tiny_classifier import save_classifier

    folder = save_classifier(tmp_path / "tiny-tox", ("neutral", "toxic"))  # synthetic; nothing is scored
    raw = config_dict("embedded", tmp_path / "run", [{"name": "unsteered"}], scorer=f"hf:{folder}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "profiles.json").write_text(json.dumps({"format": "steer-away-profiles/1", "profiles": []}))
    with pytest.raises(InputError, match=r"was scored by an unrecorded scorer, this sweep scores with hf:tiny-tox@"):
        prepare(SweepConfig.from_dict(raw))


def test_a_changed_or_removed_bank_file_recomputes_the_cells_that_steer_with_it(tiny_model_dir, tmp_path):
    """Issue 26, bug 10: the cell key hashed only the pair activations, so a rerun after a user's vector
    changed (or disappeared) reused the old cells: "2 of 2 cells already done"."""
    from steer_away.steering.vectors.vector import SteeringVector

    raw = config_dict(tiny_model_dir, tmp_path / "run", methods=[{"name": "unsteered"},
                                                                 {"name": "caa-dislike", "alpha": [1.0]}])
    first = run_sweep(SweepConfig.from_dict(raw), show_progress=False)
    users = sorted((tmp_path / "run" / "vectors" / "dislike" / "users").glob("*.safetensors"))
    assert len(first.computed) == 2 and len(users) >= 2
    vector = SteeringVector.load(users[0])
    (vector * 2.0).save(users[0])
    second = run_sweep(SweepConfig.from_dict(raw), show_progress=False)
    assert len(second.computed) == 1 and len(second.skipped) == 1  # caa-dislike again, unsteered reused
    users[1].unlink()
    third = run_sweep(SweepConfig.from_dict(raw), show_progress=False)
    assert len(third.computed) == 1 and third.computed != second.computed


def test_a_guarded_reranker_s_answers_keep_the_relevance_measured_while_choosing(tiny_model_dir, tmp_path, monkeypatch):
    """The cell scores only answers decoding did not score: a guarded rerank cell makes no scoring call of its
    own, and what it stores is what scoring the chosen answer afresh gives."""
    from steer_away.decoding.scoring import answer_scores
    from steer_away.evaluation.sweep import cells as cells_module
    from steer_away.models import load_model

    calls = []
    real = cells_module.answer_scores

    def counted(lm, prompts, answers, *args, **kwargs):
        calls.append(len(answers))
        return real(lm, prompts, answers, *args, **kwargs)

    monkeypatch.setattr(cells_module, "answer_scores", counted)
    config = SweepConfig.from_dict(config_dict(tiny_model_dir, tmp_path / "run", methods=[
        {"name": "rerank", "candidates": 2}]))
    run_sweep(config, show_progress=False)
    assert calls == [0] * len(calls) and calls  # every batch: nothing left to score
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    (cell,) = store.cells()
    answers = store.answers(cell.key)
    fresh = answer_scores(load_model(str(tiny_model_dir), device="cpu"), [a.prompt for a in answers],
                          [a.answer for a in answers], relevance=True)
    assert [a.relevance for a in answers] == pytest.approx([s.relevance for s in fresh], abs=1e-4, nan_ok=True)
