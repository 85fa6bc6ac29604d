#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite: the fast tests, then the slow ones that load
# the embedded SmolLM2 model (marker `slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q
python -m pytest -q -m slow
