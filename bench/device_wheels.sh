#!/usr/bin/env bash
# Builds .device/wheels here (online): what bench/device_check.sh may need to install on a GPU machine that has
# PyTorch and transformers but no network, with their dependencies, for CPython 3.11 and 3.12 on x86-64 Linux.
# numpy is left out (PyTorch's machines have it). Carry the folder with the working tree: run(carry=[".device/wheels"]).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.device/wheels
rm -rf "$DEST" && mkdir -p "$DEST"
PIP="${PIP:-.venv/bin/pip}"
for py in 3.11 3.12; do  # steer-away needs Python 3.11+ (and transformers 5.24 does too)
    "$PIP" download -q --only-binary=:all: -d "$DEST" --python-version "$py" \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
        "transformers==5.24.0" fastapi uvicorn httpx rich tqdm pytest gguf pyyaml 2>&1 | grep -v "^WARNING: Location" || true
done
rm -f "$DEST"/numpy-*.whl "$DEST"/torch-*.whl "$DEST"/nvidia_*.whl
du -sh "$DEST"
