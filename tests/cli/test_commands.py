import json
import sqlite3
import subprocess
import sys

import pytest

from steer_away.cli import main
from steer_away.profiles import load_profiles
from tests.scoring.tiny_classifier import save_classifier


def test_profiles_build_cli(tmp_path, capsys):
    out = tmp_path / "profiles.json"
    assert main(["profiles", "build", "--out", str(out), "--score-cache", str(tmp_path / "s.sqlite"),
                 "--show", "3"]) == 0
    payload = json.loads(out.read_text())
    assert len(payload["profiles"]) == 270  # the stand-in's 300 users, 270 of whom have conversations


def test_profiles_build_cli_with_a_hugging_face_classifier(tmp_path):
    """`--scorer hf:<folder>` with a synthetic tiny binary classifier: one attribute, TOXICITY, all the way through."""
    folder = save_classifier(tmp_path / "tiny-tox", ("neutral", "toxic"))
    out, cache = tmp_path / "profiles.json", tmp_path / "s.sqlite"
    assert main(["profiles", "build", "--scorer", f"hf:{folder}", "--out", str(out), "--score-cache", str(cache),
                 "--show", "3"]) == 0
    payload = json.loads(out.read_text())
    assert payload["scorer"].startswith("hf:tiny-tox@sha256:") and len(payload["profiles"]) == 270
    profiles = load_profiles(out)
    assert all(p.attributes == ["TOXICITY"] and len(p.bt_theta) == 1 for p in profiles.values())
    with sqlite3.connect(cache) as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM scores WHERE backend = ?", (payload["scorer"],)).fetchone()
    assert rows == 6460  # every distinct response of the stand-in, scored by the hf backend


def test_data_stats_cli_prints_the_figures_and_the_verdict(capsys):
    assert main(["data", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["users"] == 300 and stats["tie_share"] >= 0.9
    assert main(["data", "stats", "--prism", "contrast-fixture"]) == 0
    captured = capsys.readouterr()
    assert "misses the targets" in captured.out + captured.err


def test_data_standin_cli_writes_a_loadable_folder(tmp_path):
    from steer_away.data.prism import load_prism

    assert main(["data", "standin", "--out", str(tmp_path / "s"), "--users", "12", "--seed", "5"]) == 0
    data = load_prism(tmp_path / "s")
    assert len(data.survey) == 12 and data.report.skipped == 0


def test_bad_input_gives_one_line_error(tmp_path, capsys):
    assert main(["profiles", "build", "--prism", str(tmp_path), "--out", str(tmp_path / "p.json")]) == 2
    assert "has no survey.jsonl" in capsys.readouterr().err


def test_sweep_config_error(tmp_path, capsys):
    bad = tmp_path / "s.toml"
    bad.write_text("[sweep]\nfoo = 1\n[[methods]]\nname = 'unsteered'\n")
    assert main(["sweep", "--config", str(bad)]) == 2
    assert "unknown key [sweep].foo" in capsys.readouterr().err


@pytest.mark.slow
def test_generate_on_embedded_model_offline(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "steer_away.cli", "generate", "--prompt",
                             "What is the capital of France?", "--max-tokens", "20"],
                            capture_output=True, text=True, timeout=300, env={**env, "HOME": str(tmp_path.parent)})
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.slow
def test_quick_demo_writes_a_report(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--no-ppa"]) == 0
    report = (tmp_path / "demo" / "report" / "report.md").read_text()
    assert "| unsteered |" in report and "Steered vs unsteered answers" in report
    assert (tmp_path / "demo" / "report" / "sweep.png").stat().st_size > 10_000


def test_gguf_export_and_import_commands(tiny_model_dir, tmp_path):
    import torch

    from steer_away.steering.vectors.vector import SteeringVector

    g = torch.Generator().manual_seed(0)
    vector = SteeringVector({l: torch.randn(32, generator=g) for l in (0, 1, 2)}, "tiny", 32, 4,
                            meta={"kind": "population"})
    vector.save(tmp_path / "v.safetensors")
    # layer 0 cannot be written for llama.cpp: the command says so, and --layers restricts
    assert main(["vectors", "export-gguf", "--vector", str(tmp_path / "v.safetensors"),
                 "--out", str(tmp_path / "v.gguf")]) == 2
    assert main(["vectors", "export-gguf", "--vector", str(tmp_path / "v.safetensors"), "--layers", "1-2",
                 "--scale", "2", "--out", str(tmp_path / "v.gguf")]) == 0
    assert main(["vectors", "import-gguf", "--model", str(tiny_model_dir), "--gguf", str(tmp_path / "v.gguf"),
                 "--out", str(tmp_path / "back.safetensors")]) == 0
    back = SteeringVector.load(tmp_path / "back.safetensors")
    assert back.layers == [1, 2]
    for layer in (1, 2):
        torch.testing.assert_close(back.directions[layer], 2 * vector.directions[layer])


def test_generate_flag_a_method_does_not_take(tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "hi", "--method", "eads",
                 "--layers", "1-2"]) == 2
    assert "--layers does not apply to eads" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "hi", "--method", "eads",
                 "--alpha", "nan"]) == 2
    assert "alpha must be finite" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--layers", "20-15"], "range 20-15 is empty or negative"),
    (["--layers", "0-1000000000"], "layer index 1000000000 out of range"),
    (["--alpha", "1e30"], "|alpha| <= 1000"),
    (["--alpha", "inf"], "alpha must be finite"),
])
def test_generate_refuses_silent_wrong_results(tiny_model_dir, tmp_path, capsys, flags, message):
    import time

    import torch

    from steer_away.steering.vectors.vector import SteeringVector

    SteeringVector({1: torch.ones(32)}, str(tiny_model_dir), 32, 4).save(tmp_path / "v.safetensors")
    start = time.perf_counter()
    code = main(["generate", "--model", str(tiny_model_dir), "--prompt", "hi", "--vector",
                 str(tmp_path / "v.safetensors"), *flags])
    assert code == 2 and message in capsys.readouterr().err
    assert time.perf_counter() - start < 30  # no billion-element layer list


def test_categories_check_reads_a_prompt_file(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the quick brown fox\n\nthank you\n")
    assert main(["categories", "check", "--model", str(tiny_model_dir), "--device", "cpu", "--prompts", str(prompts),
                 "--category", "strict", "--max-tokens", "4", "--score-cache", str(tmp_path / "s.sqlite")]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "2 prompts" in text and "anti_expert" in text and "strict: anti-expert − expert" in text
    assert main(["categories", "check", "--model", str(tiny_model_dir), "--prompts", str(prompts),
                 "--category", "nope"]) == 2


def test_calibrate_prompts_come_from_the_split_the_vectors_were_extracted_with(tiny_model_dir, tmp_path):
    from steer_away.cli import build_parser
    from steer_away.cli.options import prompt_set
    from steer_away.data.prism import load_prism
    from steer_away.data.prompts import PromptOverlapError, PromptSplit, heldout_openings

    store = tmp_path / "vectors"
    assert main(["vectors", "extract", "--model", str(tiny_model_dir), "--device", "cpu", "--layers", "1-2",
                 "--n-pairs", "8", "--holdout", "0.5", "--seed", "3", "--out", str(store)]) == 0
    assert PromptSplit.stored_with(store) == PromptSplit(holdout=0.5, seed=3)
    args = build_parser().parse_args(["calibrate", "--vectors", str(store), "--n-prompts", "50"])
    assert prompt_set(args) == heldout_openings(None, 50, PromptSplit(holdout=0.5, seed=3))
    assert prompt_set(args) != heldout_openings(None, 50)
    # without vectors (categories check): the default split, as before
    check = build_parser().parse_args(["categories", "check", "--n-prompts", "12"])
    assert prompt_set(check) == heldout_openings(None, 12)
    # a prompt file: read whole; one the vectors were trained on is refused, naming it
    train, _ = PromptSplit(holdout=0.5, seed=3).pairs(load_prism(None).turns)
    mine = tmp_path / "mine.txt"
    mine.write_text("Is this new?\n")
    assert prompt_set(build_parser().parse_args(["calibrate", "--vectors", str(store), "--prompts", str(mine)])) \
        == ["Is this new?"]
    mine.write_text("Is this new?\n" + train[0].prompt + "\n")
    with pytest.raises(PromptOverlapError, match="--prompts"):
        prompt_set(build_parser().parse_args(["calibrate", "--vectors", str(store), "--prompts", str(mine)]))
    shipped = prompt_set(build_parser().parse_args(["categories", "check", "--prompts", "shipped", "--n-prompts", "8"]))
    assert len(shipped) == 8 and len(set(shipped)) == 8


def test_calibrate_refuses_a_method_whose_rows_alpha_changes_nothing_and_takes_guided(capsys):
    from steer_away.cli import build_parser

    for argv in (["--method", "rerank"], ["--method", "profile-prompt"], ["--method", "unsteered"]):
        assert main(["calibrate", *argv]) == 2
        assert "has no strength α to calibrate" in capsys.readouterr().err
    from steer_away.cli.options import method_args_from_args
    from steer_away.steering.registry import get_method

    for argv, strength in ((["--method", "guided"], "alpha"), (["--method", "rerank", "--over", "eads"], "alpha")):
        name, method_args = method_args_from_args(build_parser().parse_args(["calibrate", *argv]))
        assert get_method(name).strength_of(method_args).argument == strength  # rerank over EADS: EADS's α
