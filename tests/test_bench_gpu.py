"""bench/gpu.py --tiny: the GPU benchmark's own code, run on the CPU at the tiny shape (CI's smoke test of it)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench" / "gpu.py"


@pytest.mark.slow
def test_gpu_benchmark_runs_at_the_tiny_shape_and_prints_every_table():
    run = subprocess.run([sys.executable, str(BENCH), "--tiny", "--repeats", "1", "--warmup", "0", "--batches", "1,2",
                          "--host-batch", "8", "--methods", "unsteered,caa-per-user,eads"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    for title in ("Batch 1: prefill and decode", "Batch 2: prefill and decode", "Every row its own steering",
                  "weight-bandwidth bound", "Host time per decode step"):
        assert title in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("unsteered ", "caa-per-user ", "eads "))]
    assert {r[0] for r in rows} >= {"unsteered", "caa-per-user", "eads"}
    measured = [r for r in rows if len(r) == 7 and r[1].isdigit()]  # method, batch, prefill, decode, ratios, peak
    assert len(measured) == 6 and all(float(r[3]) > 0 for r in measured)
