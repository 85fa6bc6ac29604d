"""Control vectors between steer-away and a real llama.cpp: same greedy tokens, both directions.

Not part of the test run: it builds llama.cpp's Python binding (PyPI `llama-cpp-python`) from
source in its own venv first (scripts/llamacpp_venv.sh; minutes on a small CPU, once).

1. The embedded SmolLM2 GGUF is de-quantised to an F32 GGUF (the weights steer-away decodes with;
   checked tensor by tensor), so any difference below is steering, not quantisation.
2. A respectful-vs-toxic CAA vector (our contrast set, the seed layers) is exported with
   `SteeringVector.export_gguf`; llama.cpp applies it the way its own loader reads control-vector
   files; steer-away steers with the same vector. Greedy tokens are compared per prompt.
3. The other direction: the same directions written by repeng's own `ControlVector.export_gguf`
   are imported with `load_vector(... .gguf)` and decoded by both.
4. A control that must fail: the file renumbered one layer deeper (`direction.{l+1}`, what
   steer-away wrote before the fix) in llama.cpp against our unshifted run.

For each prompt: identical, or the first diverging position with both tokens and our score margin
there (our logit of our token minus our logit of llama.cpp's: a margin near 0 is a near-tie that
float summation order can flip), and what the steering does to the text at each α: agreement on
fluent answers (small α) is the harder test, since collapsed, repetitive text has few near-ties.

    .venv/bin/pip install --no-deps repeng scikit-learn scipy joblib threadpoolctl cloudpickle narwhals
    .venv/bin/python bench/llamacpp_interop.py [--tokens 32] [--alphas 0.5,1.0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, machine_line, print_table
from steer_away import internals
from steer_away.chat import render_chat
from steer_away.generation import GenerationConfig, generate
from steer_away.models import LanguageModel, embedded_gguf_path, load_model
from steer_away.paths import cache_root
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.vectors.card import respectful_direction
from steer_away.steering.vectors.layers import default_layers
from steer_away.steering.vectors.vector import SteeringVector, load_vector

ROOT = Path(__file__).resolve().parent.parent


def llamacpp_python(given: str | None) -> str:
    if given:
        return given
    subprocess.run(["bash", str(ROOT / "scripts" / "llamacpp_venv.sh")], check=True)
    return str(ROOT / ".venv-llamacpp" / "bin" / "python")


def f32_gguf(source: Path, target: Path) -> Path:
    """Every tensor of `source` de-quantised to F32, metadata copied (file type set to all-F32)."""
    import gguf

    if target.is_file():
        return target
    reader = gguf.GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(target) + ".tmp", arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = field.contents()
        if name == "general.file_type":
            value = int(gguf.LlamaFileType.ALL_F32)
        kind = field.types[0]
        writer.add_key_value(name, value, kind, sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    Path(str(target) + ".tmp").rename(target)
    return target


def same_weights(lm: LanguageModel, path: Path) -> str:
    """Compare tensors that no converter permutes (norms, MLP, embeddings) with the model we decode with."""
    import gguf

    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    model = lm.model.model
    pairs = {"token_embd.weight": model.embed_tokens.weight, "output_norm.weight": model.norm.weight}
    for i in (0, len(model.layers) // 2, len(model.layers) - 1):
        layer = model.layers[i]
        pairs[f"blk.{i}.ffn_down.weight"] = layer.mlp.down_proj.weight
        pairs[f"blk.{i}.ffn_gate.weight"] = layer.mlp.gate_proj.weight
        pairs[f"blk.{i}.attn_output.weight"] = layer.self_attn.o_proj.weight
        pairs[f"blk.{i}.attn_norm.weight"] = layer.input_layernorm.weight
    equal = sum(torch.equal(torch.from_numpy(np.array(tensors[name].data)).reshape(ours.shape), ours.detach().cpu())
                for name, ours in pairs.items())
    return f"{equal}/{len(pairs)} tensors bit-identical to steer-away's weights"


def shifted_copy(vector: SteeringVector, path: Path) -> Path:
    """The vector written one layer deeper (direction.{l+1}): what llama.cpp must NOT match."""
    deeper = SteeringVector({l + 1: v for l, v in vector.directions.items()}, model_id=vector.model_id,
                            hidden_size=vector.hidden_size, num_layers=vector.num_layers)
    return deeper.export_gguf(path)


def margin(lm: LanguageModel, prompt: list[int], ours: list[int], at: int, theirs: int,
           method: ActivationSteering | None) -> float:
    ids = torch.tensor([prompt + ours[:at]])
    prepared = (method.prepare(lm, [[{"role": "user", "content": "-"}]], [RowSteering()]) if method else None)
    with torch.inference_mode():
        if prepared is not None:
            with prepared.scope(lm.model):
                logits = internals.forward_full(lm.model, ids, torch.ones_like(ids))[0, -1]
        else:
            logits = internals.forward_full(lm.model, ids, torch.ones_like(ids))[0, -1]
    return float(logits[ours[at]] - logits[theirs])


def compare(lm: LanguageModel, prompts: list[list[int]], ours: list[list[int]], theirs: list[list[int]],
            method: ActivationSteering | None) -> tuple[int, list[str]]:
    same, notes = 0, []
    for prompt, a, b in zip(prompts, ours, theirs):
        if a == b:
            same += 1
            notes.append("identical")
            continue
        at = next(k for k, (x, y) in enumerate(zip(a, b)) if x != y)
        notes.append(f"diverges at token {at}: ours {lm.tokenizer.decode([a[at]])!r} vs "
                     f"llama.cpp {lm.tokenizer.decode([b[at]])!r}, our margin {margin(lm, prompt, a, at, b[at], method):.2g}")
    return same, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt")
    parser.add_argument("--alphas", default="0.5,0.1,0.25,1.0",
                        help="strengths; the first is also used for repeng's file and the control")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llamacpp-python", default=None, help="a python with llama_cpp (default: build one)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    python = llamacpp_python(args.llamacpp_python)
    lm = load_model(None)  # the embedded SmolLM2, f32
    print(machine_line(lm))
    work = cache_root() / "interop"
    work.mkdir(parents=True, exist_ok=True)
    model_path = f32_gguf(embedded_gguf_path(), work / "SmolLM2-135M-Instruct.F32.gguf")
    print(f"F32 conversion {model_path}: {same_weights(lm, model_path)}")

    layers = default_layers(lm.model)
    vector = SteeringVector(respectful_direction(lm, layers), model_id=lm.model_id, hidden_size=lm.shape.hidden_size,
                            num_layers=lm.shape.num_layers)
    tmp = Path(tempfile.mkdtemp())
    ours_file = vector.export_gguf(tmp / "steer-away.gguf")
    try:
        if not hasattr(np, "float_"):  # repeng 0.4.0 names np.float_ in type hints; NumPy 2 removed the alias
            np.float_ = np.float64  # type: ignore[attr-defined]
        import repeng
    except ImportError as err:
        sys.exit(f"{err}: .venv/bin/pip install --no-deps repeng scikit-learn scipy joblib threadpoolctl "
                 "cloudpickle narwhals")
    repeng_file = tmp / "repeng.gguf"
    repeng.ControlVector("llama", {l: vector.directions[l].numpy() for l in vector.layers}).export_gguf(str(repeng_file))
    from_repeng = load_vector(repeng_file, lm)
    shifted_file = shifted_copy(vector, tmp / "shifted.gguf")
    print(f"vector: layers {vector.layers[0]}-{vector.layers[-1]}, norms "
          f"{min(float(v.norm()) for v in vector.directions.values()):.2f}-"
          f"{max(float(v.norm()) for v in vector.directions.values()):.2f}; repeng's file imports at layers "
          f"{from_repeng.layers[0]}-{from_repeng.layers[-1]}, equal to ours: "
          f"{all(torch.equal(from_repeng.directions[l], vector.directions[l]) for l in vector.layers)}")

    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    texts = [render_chat(lm.tokenizer, c) for c in conversations]
    prompts = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    config = GenerationConfig(max_new_tokens=args.tokens, stop_on_eos=False)
    alphas = [float(a) for a in args.alphas.split(",")]
    methods: dict[str, ActivationSteering | None] = {"unsteered": None}
    runs = [{"name": "unsteered", "cvec": None, "tokens": args.tokens}]
    for alpha in alphas:
        methods[f"our file, α {alpha:g}"] = ActivationSteering(vector, alpha)
        runs.append({"name": f"our file, α {alpha:g}", "cvec": str(ours_file), "strength": alpha, "tokens": args.tokens})
    methods[f"repeng's file, α {alphas[0]:g}"] = ActivationSteering(from_repeng, alphas[0])
    runs.append({"name": f"repeng's file, α {alphas[0]:g}", "cvec": str(repeng_file), "strength": alphas[0],
                 "tokens": args.tokens})
    runs.append({"name": "control: renumbered +1", "cvec": str(shifted_file), "strength": alphas[0],
                 "tokens": args.tokens})
    job = {"model": str(model_path), "threads": args.threads, "prompts": prompts, "texts": texts, "runs": runs}
    (tmp / "job.json").write_text(json.dumps(job))
    subprocess.run([python, str(Path(__file__).parent / "llamacpp_worker.py"), str(tmp / "job.json"),
                    str(tmp / "out.json")], check=True)
    out = json.loads((tmp / "out.json").read_text())
    same_tokens = sum(a == b for a, b in zip(out["tokenised"], prompts))
    print(f"chat template tokenised identically by llama.cpp: {same_tokens}/{len(prompts)} prompts")

    ours = {name: [g.token_ids for g in generate(lm, conversations, method=m, config=config)]
            for name, m in methods.items()}
    ours["control: renumbered +1"] = ours[f"our file, α {alphas[0]:g}"]
    methods["control: renumbered +1"] = methods[f"our file, α {alphas[0]:g}"]
    rows, details = [], []
    for name in ours:
        same, notes = compare(lm, prompts, ours[name], out["runs"][name]["tokens"], methods[name])
        moved = "-" if name == "unsteered" else \
            f"{sum(a != b for a, b in zip(ours[name], ours['unsteered']))}/{len(prompts)}"
        rows.append([name, f"{same}/{len(prompts)}", moved])
        details += [[name, str(i), note] for i, note in enumerate(notes)]
    print_table(f"greedy tokens, steer-away vs llama.cpp ({args.tokens} tokens, {len(prompts)} prompts, F32 weights)",
                ["run", "identical", "steered ≠ unsteered (ours)"], rows)
    print_table("per prompt", ["run", "prompt", "result"], details)
    print(f"\nwhat the steering does to the first prompt ({PROMPTS[0]!r}):")
    for name in ("unsteered", *[f"our file, α {a:g}" for a in alphas]):
        print(f"  {name}: {lm.tokenizer.decode(ours[name][0], skip_special_tokens=True)!r}")


if __name__ == "__main__":
    main()
