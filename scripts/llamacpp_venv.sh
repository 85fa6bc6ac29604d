#!/usr/bin/env bash
# A separate virtual environment with llama.cpp's Python binding (llama-cpp-python), built from
# source for this machine's CPU. Used by bench/llamacpp_interop.py and bench/vs_llamacpp.py only:
# it is never imported by steer-away itself. The build compiles llama.cpp (about 25 minutes on
# 2 cores); a second run with the venv in place returns at once.
#
#   bash scripts/llamacpp_venv.sh            # -> .venv-llamacpp/bin/python
#   LLAMACPP_VENV=/some/where bash scripts/llamacpp_venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLAMACPP_VENV:-.venv-llamacpp}"
VERSION="${LLAMACPP_VERSION:-0.3.36}"
PY="${PYTHON:-python3}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
  echo "llama-cpp-python $VERSION already in $VENV"
  exit 0
fi
command -v cmake >/dev/null || { echo "building llama-cpp-python needs cmake and a C++ compiler (apt install cmake g++)" >&2; exit 1; }
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# CPU only, tuned for this CPU (GGML_NATIVE); no tools or examples: only the shared library is needed.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
echo "building llama-cpp-python $VERSION into $VENV (CMAKE_ARGS=$CMAKE_ARGS) ..."
start=$(date +%s)
"$VENV/bin/pip" install -q --no-cache-dir "llama-cpp-python==$VERSION" numpy "gguf>=0.10"
echo "built in $(( $(date +%s) - start )) s: $("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__file__)')"
