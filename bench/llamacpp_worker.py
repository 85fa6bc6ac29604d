"""Runs inside the llama.cpp venv (scripts/llamacpp_venv.sh), never in steer-away's: greedy decoding
with llama.cpp's Python binding, optionally under a control vector, for the interop and speed checks.

    python llamacpp_worker.py JOB.json OUT.json
    python llamacpp_worker.py --serve      # one JSON request per stdin line, one JSON answer per stdout line

JOB: {"model": path, "threads": n, "n_ctx": n, "prompts": [[token ids]...], "texts": [str...],
      "runs": [{"name": str, "cvec": path or null, "strength": float, "tokens": n, "repeats": n}]}
OUT: {"tokenised": [[ids]...] (llama.cpp's own tokens for "texts"), "runs": {name: {"tokens": [[ids]...],
      "seconds": [[decode seconds per repeat]...]}}, "n_layer": n, "n_embd": n}

A control vector file is read the way llama.cpp's loader reads it (common/common.cpp,
common_control_vector_load_one): tensor `direction.N` (N >= 1) goes to buffer slot N - 1, the
buffer holds layers 1 .. n_layer - 1, and llama_set_adapter_cvec (src/llama-adapter.cpp,
llama_adapter_cvec::apply) copies slot N - 1 into layer N and adds it to block N's output. The
buffer is padded to every layer: apply() writes only the layers the buffer covers and leaves
the rest as they were.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time

import gguf
import llama_cpp
import numpy as np


def control_buffer(path: str, n_layer: int, n_embd: int, strength: float) -> np.ndarray:
    reader = gguf.GGUFReader(path)
    buffer = np.zeros((n_layer - 1) * n_embd, dtype=np.float32)
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit() or not 1 <= int(index) < n_layer:
            raise SystemExit(f"{path}: tensor {tensor.name} is not direction.1 .. direction.{n_layer - 1}")
        layer = int(index)
        buffer[(layer - 1) * n_embd:layer * n_embd] += np.asarray(tensor.data, dtype=np.float32).reshape(-1) * strength
    return buffer


def greedy(llm: llama_cpp.Llama, prompt: list[int], tokens: int) -> tuple[list[int], float]:
    """`tokens` greedy tokens: one prefill and tokens - 1 one-token steps (what steer-away runs), timed whole."""
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    out: list[int] = []
    for i in range(tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        if i < tokens - 1:
            llm.eval([token])
    return out, time.perf_counter() - start


def set_control(llm: llama_cpp.Llama, path: str | None, strength: float) -> None:
    n_layer, n_embd = llama_cpp.llama_model_n_layer(llm.model), llm.n_embd()
    if not path:
        llama_cpp.llama_set_adapter_cvec(llm._ctx.ctx, None, 0, n_embd, -1, -1)
        return
    buffer = control_buffer(path, n_layer, n_embd, strength)
    pointer = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    if llama_cpp.llama_set_adapter_cvec(llm._ctx.ctx, pointer, buffer.size, n_embd, 1, n_layer - 1) != 0:
        raise SystemExit(f"llama.cpp refused the control vector {path}")


def serve() -> None:
    """Requests {"model", "threads", "cvec", "strength", "prompt", "tokens"}; one Llama per model, kept."""
    models: dict[str, llama_cpp.Llama] = {}
    for line in sys.stdin:
        request = json.loads(line)
        path = request["model"]
        if path not in models:
            threads = request.get("threads", 2)
            models[path] = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                                           logits_all=True, verbose=False, seed=0)
        llm = models[path]
        set_control(llm, request.get("cvec"), float(request.get("strength", 1.0)))
        tokens, seconds = greedy(llm, request["prompt"], int(request["tokens"]))
        print(json.dumps({"tokens": tokens, "seconds": seconds}), flush=True)


def main() -> None:
    with open(sys.argv[1]) as handle:
        job = json.load(handle)
    llm = llama_cpp.Llama(model_path=job["model"], n_ctx=job.get("n_ctx", 2048), n_threads=job.get("threads", 2),
                          n_threads_batch=job.get("threads", 2), logits_all=True, verbose=False, seed=0)
    n_layer, n_embd = llama_cpp.llama_model_n_layer(llm.model), llm.n_embd()
    result: dict = {"n_layer": n_layer, "n_embd": n_embd,
                    "tokenised": [llm.tokenize(text.encode(), add_bos=False, special=True) for text in job["texts"]],
                    "runs": {}}
    for run in job["runs"]:
        set_control(llm, run.get("cvec"), float(run.get("strength", 1.0)))
        tokens, seconds = [], []
        for prompt in job["prompts"]:
            times = []
            for _ in range(int(run.get("repeats", 1))):
                ids, elapsed = greedy(llm, prompt, int(run["tokens"]))
                times.append(elapsed)
            tokens.append(ids)
            seconds.append(times)
        result["runs"][run["name"]] = {"tokens": tokens, "seconds": seconds}
    with open(sys.argv[2], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    serve() if sys.argv[1:] == ["--serve"] else main()
