#!/usr/bin/env bash
# The one script to run on a GPU machine (PyTorch and transformers installed, no network), in the repository root:
#     bash bench/device_check.sh OUT
# Installs what is missing from .device/wheels (built beforehand by bench/device_wheels.sh and carried with the
# working tree), then runs the CUDA-marked tests, bench/gpu.py at Llama-3.1-8B's shape and bench/server_load.py
# against the same random 8B-shaped model, each under its own time limit (8 minutes in all, at most). Everything goes
# to OUT: environment.txt, pip.txt, cuda_tests.txt, gpu.txt, server_load.txt and summary.txt.
# Without CUDA it runs the same steps at the tiny shape on the CPU (a dry run of the script itself).
set -uo pipefail
OUT=${1:?usage: bash bench/device_check.sh OUT}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, output to OUT/NAME.txt, one summary line
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    summary "$name: exit $rc in $((SECONDS - start)) s$([ $rc -eq 124 ] && echo " (time limit $limit s)")"
}
: > "$OUT/summary.txt"
{ "$PY" -V; nvidia-smi 2>&1 | head -15
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
} > "$OUT/environment.txt" 2>&1
summary "$(tail -1 "$OUT/environment.txt")"

# What steer-away, its tests and the benchmarks import, as pip names; installed from the carried wheels if missing.
missing=$("$PY" - <<'PYEOF'
import importlib.util
from importlib.metadata import PackageNotFoundError, version
needed = {"rich": "rich", "tqdm": "tqdm", "httpx": "httpx", "fastapi": "fastapi", "uvicorn": "uvicorn",
          "pytest": "pytest", "gguf": "gguf", "safetensors": "safetensors", "tokenizers": "tokenizers",
          "huggingface_hub": "huggingface-hub", "yaml": "pyyaml"}
out = [dist for module, dist in needed.items() if importlib.util.find_spec(module) is None]
try:
    major, minor = (int(x) for x in version("transformers").split(".")[:2])
    if (major, minor) < (5, 24):  # our forward passes use `cache=`, new in 5.24
        out += ["transformers==5.24.0", "tokenizers", "huggingface-hub"]
except PackageNotFoundError:
    out.append("transformers==5.24.0")
print(" ".join(dict.fromkeys(out)))
PYEOF
)
if [ -n "$missing" ]; then
    "$PY" -m pip install --no-index --find-links .device/wheels $missing > "$OUT/pip.txt" 2>&1
    summary "installed from .device/wheels: $missing (exit $?)"
else
    summary "nothing to install"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    step cuda_tests 90 "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_cuda.py
    step gpu 300 "$PY" -u bench/gpu.py --repeats 2 --warmup 1 --tokens 32 --branch-max-batch 64
    step server_load 90 "$PY" bench/server_load.py --shape llama-3.1-8b --device cuda --rates 2,8 --requests 24
else
    summary "no CUDA here: a dry run at the tiny shape on the CPU"
    step cuda_tests 120 "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_cuda.py
    step gpu 300 "$PY" bench/gpu.py --tiny --repeats 1 --warmup 0 --host-batch 64
    step server_load 120 "$PY" bench/server_load.py --shape tiny --device cpu --rates 2 --requests 4
fi
summary "done in $SECONDS s"
