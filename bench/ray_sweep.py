"""A sweep sharded over Ray workers against the same sweep unsharded, and a worker killed mid-cell.

Three runs of one config, each in its own copy of a prepared run folder (profiles, vectors and score
cache copied from `--from`, so every run reads the same files and no run builds them):
  plain    `steer-away sweep` in one process;
  sharded  the same with `--ray` (Ray started here, the config's `ray_workers`);
  killed   the same with `--ray`, one worker process sent SIGKILL once the store holds `--kill-after`
           answers, then the same command again: which rows the second run computed.
It prints the wall times, which report CSVs are byte-identical (main.csv is compared without its
`cost_ratio` column, a timing), and the rows each run of the killed sweep computed.

    python bench/ray_sweep.py --config sweep.toml --from steer-away-demo --work /tmp/ray-bench
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

TIMING_COLUMNS = {"cost_ratio"}  # a measured time: differs between any two runs


def prepared(source: Path, folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in ("profiles.json", "vectors", "scores.sqlite"):
        if (source / name).is_dir():
            shutil.copytree(source / name, folder / name)
        elif (source / name).exists():
            shutil.copy2(source / name, folder / name)
    return folder


def sweep(config: Path, folder: Path, ray: bool, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "steer_away.cli", "sweep", "--config", str(config), "--out", str(folder), "--no-ppa"]
    with log.open("a") as err:
        return subprocess.Popen(cmd + (["--ray"] if ray else []), stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def timed(proc: subprocess.Popen) -> float:
    start = time.perf_counter()
    if proc.wait() != 0:
        raise SystemExit(f"sweep failed ({proc.args}); see its log")
    return time.perf_counter() - start


def rows(store: Path) -> dict[str, str]:
    """row key -> run id, over every cell's answers and questions."""
    with sqlite3.connect(store) as db:
        found = {f"a|{c}|{r}": run for c, r, run in db.execute("SELECT cell, row_id, run_id FROM answers")}
        found |= {f"q|{c}|{q}": run for c, q, run in db.execute("SELECT cell, question_id, run_id FROM mmlu")}
    return found


def same_csvs(a: Path, b: Path) -> list[tuple[str, bool]]:
    out = []
    for path in sorted(a.glob("*.csv")):
        other = b / path.name
        if path.name == "main.csv":
            def table(p: Path) -> list[list[str]]:
                lines = list(csv.reader(p.open()))
                keep = [i for i, name in enumerate(lines[0]) if name not in TIMING_COLUMNS]
                return [[line[i] for i in keep] for line in lines]
            out.append(("main.csv without cost_ratio", table(path) == table(other)))
        else:
            out.append((path.name, path.read_bytes() == other.read_bytes()))
    return out


def kill_mid_cell(config: Path, folder: Path, log: Path, after: int) -> tuple[float, int, int, int]:
    """(seconds, answers stored when killed, answers and questions in the shards the log says were lost,
    answers and questions the rerun computed)."""
    start = time.perf_counter()
    proc = sweep(config, folder, True, log)
    store = folder / "results.sqlite"
    killed_at = 0
    while proc.poll() is None and not killed_at:
        time.sleep(0.5)
        pids = re.findall(r"Ray workers ready \(pids ([\d, ]+)\)", log.read_text())
        if pids and store.is_file():
            with sqlite3.connect(store) as db:
                stored = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            if stored >= after:
                pid = int(pids[0].split(",")[0])
                os.kill(pid, signal.SIGKILL)
                killed_at = stored
                print(f"killed worker pid {pid} with {stored} answers stored", file=sys.stderr)
    timed(proc)
    first = rows(store)
    lost = sum(int(a) + int(q) for a, q in re.findall(r"shard \d+ \((\d+) answers, (\d+) questions\) died",
                                                      log.read_text()))
    timed(sweep(config, folder, True, log))
    second = rows(store)
    redone = sum(1 for k in second if k not in first)
    changed = sum(1 for k, run in first.items() if second[k] != run)
    if changed:
        raise SystemExit(f"{changed} stored rows were computed again")
    return time.perf_counter() - start, killed_at, lost, redone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="sweep TOML (its shard_retries = 0 to see a lost shard)")
    parser.add_argument("--from", dest="source", type=Path, required=True, help="a run folder with profiles and vectors")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--kill-after", type=int, default=200, help="answers stored before a worker is killed")
    parser.add_argument("--phases", default="plain,sharded,killed")
    args = parser.parse_args()
    phases = args.phases.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    for name, ray in (("plain", False), ("sharded", True)):
        if name in phases:
            seconds[name] = timed(sweep(args.config, prepared(args.source, args.work / name), ray, args.work / f"{name}.log"))
    print(f"machine: {os.cpu_count()} CPUs; config {args.config}")
    for name, value in seconds.items():
        print(f"{name:8s} wall {value:7.1f} s")
    if len(seconds) == 2:
        print(f"sharded ÷ plain wall time: {seconds['sharded'] / seconds['plain']:.3f}")
        for name, same in same_csvs(args.work / "plain" / "report", args.work / "sharded" / "report"):
            print(f"  {name:32s} {'identical' if same else 'DIFFERENT'}")
    if "killed" in phases:
        folder = prepared(args.source, args.work / "killed")
        wall, at, missing, redone = kill_mid_cell(args.config, folder, args.work / "killed.log", args.kill_after)
        print(f"killed   wall {wall:7.1f} s (both runs): a worker killed with {at} answers stored; its lost shards "
              f"held {missing} answers and questions; the rerun computed {redone}, and nothing stored before")
        if (args.work / "plain" / "report").is_dir():
            for name, same in same_csvs(args.work / "plain" / "report", folder / "report"):
                print(f"  killed vs plain: {name:32s} {'identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
