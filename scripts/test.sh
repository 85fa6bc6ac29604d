#!/usr/bin/env bash
# Sets up .venv, checks lint and types, and runs the whole test suite: the fast tests, then the
# slow ones that load the embedded SmolLM2 model (marker `slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
. .venv/bin/activate
echo "== lint (ruff) and types (mypy)"
ruff check src tests bench scripts
mypy
echo "== tests"
python -m pytest -q
python -m pytest -q -m slow
