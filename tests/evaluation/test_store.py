"""The results store refuses files that are not one, and splits cells between concurrent sweeps."""

import os
import sqlite3
import subprocess
import sys

import pytest

from steer_away.evaluation.store import ResultsStore
from steer_away.files import StoreError
from steer_away.scoring.cache import ScoreCache


def test_corrupt_store_is_one_clear_error(tmp_path):
    bad = tmp_path / "results.sqlite"
    bad.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(StoreError, match=r"results.sqlite is not a readable SQLite results store .*move it away"):
        ResultsStore(bad)
    with pytest.raises(StoreError, match="not a readable SQLite score cache"):
        ScoreCache(bad)


def test_foreign_sqlite_file_is_left_alone(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match="database of something else \\(tables: invoices\\)"):
        ResultsStore(other)
    with sqlite3.connect(other) as con:  # untouched: no tables of ours were added
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["invoices"]


def test_readers_do_not_create_stores(tmp_path):
    with pytest.raises(FileNotFoundError, match="results store not found"):
        ResultsStore(tmp_path / "typo.sqlite", create=False)
    assert not (tmp_path / "typo.sqlite").exists()
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match=r"is empty \(0 bytes\): not a results store"):
        ResultsStore(tmp_path / "empty.sqlite", create=False)
    ResultsStore(tmp_path / "empty.sqlite").close()  # a sweep may start a new store in an empty file


def test_report_command_on_a_mistyped_path(tmp_path, capsys):
    from steer_away.cli import main

    assert main(["report", "--store", str(tmp_path / "typo.sqlite")]) == 2
    assert "results store not found" in capsys.readouterr().err
    assert not (tmp_path / "typo.sqlite").exists()


def test_leases_split_cells_between_sweeps(tmp_path):
    a, b = ResultsStore(tmp_path / "r.sqlite"), ResultsStore(tmp_path / "r.sqlite")
    assert a.claim("cell-1") and a.claim("cell-1")  # renewing one's own lease
    assert not b.claim("cell-1")  # held by a live sweep
    assert b.claim("cell-2") and not a.claim("cell-2")
    a.release("cell-1")
    assert b.claim("cell-1")


def test_lease_of_a_dead_sweep_is_taken_over(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        import socket
        import time

        con.execute("INSERT INTO leases VALUES (?, ?, ?)", ("cell-1", f"{socket.gethostname()}:{pid}:x",
                                                           time.time() + 3600))
    assert pid != os.getpid() and store.claim("cell-1")


def test_a_sweep_leaves_cells_another_live_sweep_holds(tiny_model_dir, tmp_path):
    from steer_away.evaluation.sweep import SweepConfig, run_sweep
    from tests.evaluation.test_sweep import config_dict

    raw = config_dict(tiny_model_dir, tmp_path / "run", methods=[{"name": "unsteered"},
                                                                 {"name": "eads", "alpha": [1.0, 2.0]}])
    config = SweepConfig.from_dict(raw)
    first = run_sweep(SweepConfig.from_dict(raw | {"methods": raw["methods"][:1]}), show_progress=False)
    assert len(first.computed) == 1
    # another sweep (another store connection, this live process) is computing eads α=2
    from steer_away.evaluation.sweep import EvalContext

    keys = {c.label: c.key for c in EvalContext(config).cells()}
    other = ResultsStore(tmp_path / "run" / "results.sqlite")
    assert other.claim(keys["eads α=2"])
    result = run_sweep(config, show_progress=False)
    assert result.computed == [keys["eads α=1"]] and result.elsewhere == [keys["eads α=2"]]
    other.release(keys["eads α=2"])
    assert run_sweep(config, show_progress=False).computed == [keys["eads α=2"]]


def damaged_store(path):
    """Synthetic damage: a store with a few pages of answers, one page past the header overwritten."""
    from steer_away.evaluation.store import AnswerRecord, CellSpec

    store = ResultsStore(path)
    store.register_cell("c", "unsteered", None, "", CellSpec("f", {}, "unsteered"))
    store.put_answers("c", [AnswerRecord(f"u|{i}", "u", f"p{i}", "benign_control", "prompt", "x" * 300, [0.1], 0.2, 1.0, 10)
                            for i in range(200)], "run")
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[3 * page:4 * page] = os.urandom(page)
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def test_a_store_with_a_damaged_page_is_refused_in_one_line(tmp_path, capsys):
    """Issue 26, bug 9: the header was fine, so the store opened, and `report` and `sweep` died later with
    a traceback ("database disk image is malformed"); the report also left an empty output folder."""
    from steer_away.cli import main

    bad = tmp_path / "results.sqlite"
    damaged_store(bad)
    with pytest.raises(StoreError, match=r"results.sqlite is a damaged SQLite results store .*restore it"):
        ResultsStore(bad, create=False)
    assert main(["report", "--store", str(bad), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "damaged SQLite results store" in err and "Traceback" not in err
    assert not (tmp_path / "report").exists()
