"""The second audit's command-line and file-reader bugs (issue 36), each tried as a user or an attacker
would: every one is now a one-line error, exit code 2, before any work; nothing reaches a traceback."""

import json
import shutil
import sqlite3
import struct

import pytest
import torch

from steer_away.cli import main
from steer_away.resources import prism_fixture_dir
from steer_away.steering.vectors.vector import SteeringVector


def run(argv, capsys):
    """(exit code, stderr) of a command; argparse's refusals exit through SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    return code, err


def refused(argv, capsys, *needles):
    code, err = run(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err and sum("error" in line for line in err.splitlines()) == 1, err  # one line
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def vector_file(tmp_path):
    return SteeringVector({1: torch.ones(4), 2: torch.ones(4)}, "m", 4, 3).save(tmp_path / "v.safetensors")


# -- bug 9, weak spots: profile thresholds
@pytest.mark.parametrize("flags", [["--strict-below", "nan"], ["--tolerant-above", "inf"], ["--strict-below", "2"]])
def test_bug9_a_non_finite_or_out_of_range_threshold_is_refused(flags, tmp_path, capsys):
    refused(["profiles", "build", "--out", str(tmp_path / "p.json"), *flags], capsys, "error: argument")


def test_weak_spot_thresholds_in_the_wrong_order_are_refused(tmp_path, capsys):
    refused(["profiles", "build", "--out", str(tmp_path / "p.json"), "--strict-below", "0.8",
             "--tolerant-above", "0.2"], capsys, "wrong order")


# -- bug 10: outputs checked before the work
def test_bug10_profiles_out_a_folder_is_refused_before_the_work_and_leaves_nothing(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    refused(["profiles", "build", "--out", str(tmp_path / "taken")], capsys, "is not a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("out", ["/dev/full", "FOLDER", "/nonexistent-steer-away/sub/x.gguf"])
def test_bug10_export_gguf_to_an_unwritable_output_is_refused(out, tmp_path, vector_file, capsys):
    target = str(tmp_path) if out == "FOLDER" else out
    refused(["vectors", "export-gguf", "--vector", str(vector_file), "--out", target], capsys, "error:")
    assert not __import__("os").path.exists("/nonexistent-steer-away")


def test_bug10_import_gguf_into_proc_is_refused_before_loading_a_model(tmp_path, capsys):
    refused(["vectors", "import-gguf", "--gguf", str(tmp_path / "x.gguf"), "--out", "/proc/x.safetensors"], capsys,
            "/proc")


# -- bug 11: a crafted GGUF header
def test_bug11_a_gguf_claiming_huge_counts_is_refused(tmp_path):
    from steer_away.steering.vectors.vector import VectorFileError

    path = tmp_path / "crafted.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**63 - 1, 2**63 - 1))
    with pytest.raises(VectorFileError, match="more than a file of 24 bytes can hold"):
        SteeringVector.import_gguf(path, num_layers=30)


# -- bugs 13-15: generate
def test_bug13_a_tiny_sampling_temperature_decodes_greedily(monkeypatch, capsys):
    import steer_away.cli.generate as module
    from steer_away.generation import GenerationConfig

    seen = {}
    monkeypatch.setattr(module, "load_model_from_args", lambda args: object())
    monkeypatch.setattr(module, "method_from_args", lambda args, lm: None)
    monkeypatch.setattr(module, "generate", lambda lm, prompts, **kw: seen.setdefault("config", kw["config"]) and [])
    main(["generate", "--prompt", "hi", "--sample", "--temperature", "1e-300"])
    assert seen["config"] == GenerationConfig.sampled(1e-300, 0.9, max_new_tokens=128)
    assert not seen["config"].do_sample  # greedy: scores / 1e-300 overflow and torch.multinomial fails


def test_bug14_an_unknown_device_is_refused(capsys):
    refused(["generate", "--prompt", "hi", "--device", "tpu"], capsys, "unknown device 'tpu'")


def test_bug15_a_prompt_that_is_not_utf8_is_refused(capsys):
    refused(["generate", "--prompt", "caf\udce9"], capsys, "argument --prompt", "not valid UTF-8")


# -- bugs 16-17: serve
def test_bug16_a_port_past_65535_is_refused(capsys):
    refused(["serve", "--port", "99999"], capsys, "a TCP port is 1-65535")


def test_bug17_an_empty_api_key_is_refused(capsys, monkeypatch):
    refused(["serve", "--api-key", ""], capsys, "--api-key", "is empty")
    monkeypatch.setenv("STEER_AWAY_API_KEY", "")
    refused(["serve"], capsys, "STEER_AWAY_API_KEY is set but empty")


def test_weak_spot_a_port_in_use_is_one_line_before_the_model_loads(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused(["serve", "--host", "127.0.0.1", "--port", str(port)], capsys, "cannot listen on")


# -- bug 18, weak spots: calibrate
@pytest.mark.parametrize("flags,needle", [(["--batch-size", "0"], "must be at least 1"),
                                          (["--alphas", ",,"], "--alphas"),
                                          (["--max-collapsed", "nan"], "finite")])
def test_bug18_and_weak_spots_calibrate_flags_are_checked(flags, needle, tmp_path, capsys):
    refused(["calibrate", "--out", str(tmp_path / "c"), *flags], capsys, needle)


def test_weak_spot_calibrate_refuses_an_unwritable_out_before_the_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    refused(["calibrate", "--out", str(tmp_path / "file")], capsys, "is not a folder")


# -- bugs 5-8: files
def test_bug5_a_prompt_file_with_a_lone_surrogate_is_refused(tmp_path):
    from steer_away.data.prompts import PromptFileError, read_eval_prompts

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "tea \\ud800 time"}\n')
    with pytest.raises(PromptFileError, match="line 1: field 'prompt' holds a lone UTF-16 surrogate"):
        read_eval_prompts(path)


def test_bug6_a_sweep_config_that_is_not_utf8_is_refused(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_bytes(b"[sweep]\nname = \"caf\xe9\"\n")
    refused(["sweep", "--config", str(path)], capsys, "is not UTF-8 text")


@pytest.mark.parametrize("line,needle", [
    ('users_per_sensitivity = "three"', "must be a whole number"),
    ("prompts_per_category = -1", "must be at least 1"),
    ('device = "tpu"', "unknown device"),
    ("mmlu_limit = -5", "must be at least 1"),
    ("max_new_tokens = 4.5", "must be a whole number"),
    ("holdout = nan", "must be a finite number"),
])
def test_bug7_sweep_values_are_type_and_range_checked(line, needle, tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(f'[sweep]\n{line}\n[[methods]]\nname = "unsteered"\n')
    refused(["sweep", "--config", str(path)], capsys, needle)


def test_bug7_an_unknown_table_is_refused(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\n[[methodz]]\nname = "x"\n[[methods]]\nname = "unsteered"\n')
    refused(["sweep", "--config", str(path)], capsys, "unknown table [methodz]")


def test_bug8_bad_bytes_and_lone_surrogates_in_prism_records_are_skipped_not_fatal(tmp_path):
    from steer_away.data.prism import load_prism

    folder = tmp_path / "prism"
    shutil.copytree(prism_fixture_dir(), folder)
    clean = load_prism(folder)
    with open(folder / "survey.jsonl", "ab") as handle:
        handle.write(b'{"user_id": "\xff\xfe"}\n')
    conversation = json.loads((folder / "conversations.jsonl").read_text().splitlines()[0])
    conversation["conversation_id"] = "c-bad"
    conversation["opening_prompt"] = "tea \udfff time"
    with open(folder / "conversations.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(conversation) + "\n")  # json.dumps escapes it: "\\udfff", as an attacker would send
    data = load_prism(folder)
    assert data.report.skipped == clean.report.skipped + 2
    assert any("not UTF-8" in str(issue) for issue in data.report.issues)
    assert any("lone UTF-16 surrogate" in str(issue) for issue in data.report.issues)


# -- bug 12, weak spot: report on a damaged store, and a report changes nothing in it
def _store_with_one_cell(path):
    from steer_away.evaluation.store import AnswerRecord, CellSpec, ResultsStore
    from tests.evaluation.report.cells import EMPTY

    store = ResultsStore(path)
    store.register_cell("k", "unsteered", None, "", CellSpec("fp"))
    store.put_answers("k", [AnswerRecord("u|p", "u", "p", "c", "q", "an answer", [0.1] * 6, 0.1, 2.0, 5, 1.0)], "r")
    store.finish_cell("k", EMPTY)
    store.close()


def _null_utility_ci(db):
    summary = json.loads(db.execute("SELECT summary FROM cells").fetchone()[0])
    db.execute("UPDATE cells SET summary = ?", (json.dumps({**summary, "utility_ci": None}),))


@pytest.mark.parametrize("damage", [
    _null_utility_ci,
    "UPDATE cells SET spec = '{\"args\": {}}'",
    "UPDATE cells SET summary = 'not json'",
    "UPDATE answers SET toxicity = '0.5'",
    "ALTER TABLE cells DROP COLUMN finished_at",
])
def test_bug12_a_report_on_damaged_rows_is_one_line(damage, tmp_path, capsys):
    path = tmp_path / "results.sqlite"
    _store_with_one_cell(path)
    db = sqlite3.connect(path)
    damage(db) if callable(damage) else db.execute(damage)
    db.commit()
    db.close()
    refused(["report", "--store", str(path), "--out", str(tmp_path / "r")], capsys, str(path))


def test_weak_spot_a_report_adds_no_table_to_the_store_it_reads(tmp_path, capsys):
    path = tmp_path / "results.sqlite"
    _store_with_one_cell(path)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE leases")
    db.commit()
    before = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master"))
    db.close()
    main(["report", "--store", str(path), "--out", str(tmp_path / "r")])
    db = sqlite3.connect(path)
    assert sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master")) == before
    db.close()


# -- results on stdout
def test_methods_table_goes_to_stdout(capsys):
    assert main(["methods"]) == 0
    out, err = capsys.readouterr()
    assert "rerank" in out and "rerank" not in err
