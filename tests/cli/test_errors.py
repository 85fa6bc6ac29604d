"""A user's error is one line and exit code 2 (1 when the environment refused); a bug keeps its
traceback; --debug shows the traceback of every error."""

import pytest

from steer_away.cli import main
from steer_away.cli.errors import exit_code
from steer_away.evaluation.sweep import SweepConfigError
from steer_away.models import ModelLoadError
from steer_away.steering.framework.arguments import MethodArgsError


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["profiles", "build", "--prism", str(tmp_path), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "has no survey.jsonl" in err and "Traceback" not in err


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no survey.jsonl"):
        main(["--debug", "profiles", "build", "--prism", str(tmp_path), "--out", str(tmp_path / "p.json")])


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("an internal invariant broke")  # a plain ValueError is ours, not the user's

    monkeypatch.setattr("steer_away.cli.data.write_standin", broken)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["data", "standin", "--out", str(tmp_path / "s")])


def test_exit_codes_by_kind():
    assert exit_code(SweepConfigError("bad key")) == 2
    assert exit_code(MethodArgsError("alpha must be finite")) == 2
    assert exit_code(FileNotFoundError("no such file")) == 2
    assert exit_code(ModelLoadError("cannot load")) == 1
    assert exit_code(ValueError("plain")) is None
    assert exit_code(KeyError("x")) is None
