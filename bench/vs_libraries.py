"""Our CAA against the PyPI libraries `steering-vectors` and `repeng` on the same model and prompts.

Prints (1) greedy tokens/s for the same steered generation with each library's standard API, as
ratios ours ÷ theirs, and (2) the cosine between our population vector and steering-vectors'
mean-difference vector trained on the same pairs at the same token position.
Needs: pip install --no-deps steering-vectors repeng   (plus scikit-learn, which both import)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, base_parser, interleaved_medians, machine_line, print_table
from steer_away.chat import encode, render_chat
from steer_away.data.pairs import preference_pairs, sample_pairs
from steer_away.data.prism import load_prism
from steer_away.generation import GenerationConfig, generate
from steer_away.models import load_model
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.vectors.compose import population_vector
from steer_away.steering.vectors.extract import extract_pair_activations
from steer_away.steering.vectors.layers import default_layers


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64, help="pairs for the cosine check")
    args = parser.parse_args()
    import numpy as np

    if not hasattr(np, "float_"):  # repeng 0.4.0 names np.float_ in type hints; NumPy 2 removed the alias
        np.float_ = np.float64
    try:
        import repeng
        import steering_vectors
    except ImportError as err:
        sys.exit(f"{err}: pip install --no-deps steering-vectors repeng scikit-learn")

    lm = load_model(args.model, device=args.device)
    layers = default_layers(lm.model)
    shape = lm.shape
    print(machine_line(lm))

    # (2) the same pairs, the same texts, the last token: do the vectors agree?
    pairs = sample_pairs(preference_pairs(load_prism().turns), args.pairs, seed=0)
    ours = population_vector(extract_pair_activations(lm, pairs, layers, batch_size=8, progress=False), shape)
    samples = []
    for p in pairs:
        prompt = render_chat(lm.tokenizer, [{"role": "user", "content": p.prompt}])
        samples.append((prompt + p.chosen, prompt + p.rejected))
    # their tokenizer call must see the same tokens as ours: no extra special tokens
    add_special = lm.tokenizer("a")["input_ids"] != lm.tokenizer("a", add_special_tokens=False)["input_ids"]
    theirs = steering_vectors.train_steering_vector(lm.model, lm.tokenizer, samples, layers=layers,
                                                    read_token_index=-1, batch_size=1)
    cos = []
    for layer in layers:
        a, b = ours.directions[layer], theirs.layer_activations[layer].float().cpu()
        cos.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    print_table(f"Population vector vs steering-vectors' mean difference ({len(pairs)} pairs, last token)",
                ["layer", "cosine"], [[str(l), f"{c:.6f}"] for l, c in zip(layers, cos)] +
                [["min", f"{min(cos):.6f}"]])
    if add_special:
        print("note: this tokenizer adds special tokens by default; steering-vectors sees them, we do not")

    # (1) speed of the same steered greedy generation
    alpha = 0.5
    cfg = GenerationConfig(max_new_tokens=args.tokens, stop_on_eos=False)
    ours_method = ActivationSteering(ours, alpha=alpha)
    sv_vector = steering_vectors.SteeringVector({l: ours.directions[l].to(lm.device, lm.dtype) for l in layers},
                                                "decoder_block")
    rows = []
    for batch in (1, 8):
        prompts = PROMPTS[:batch]
        texts = [render_chat(lm.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        ids, mask = encode(lm, texts)
        hf_kwargs = dict(attention_mask=mask, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                         do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)

        def run_sv(ids=ids, hf_kwargs=hf_kwargs) -> None:
            with sv_vector.apply(lm.model, multiplier=alpha):
                lm.model.generate(ids, **hf_kwargs)

        control = repeng.ControlVector(lm.model.config.model_type,
                                       {l: ours.directions[l].numpy() for l in layers})

        def run_repeng(ids=ids, hf_kwargs=hf_kwargs, control=control) -> None:
            wrapped = repeng.ControlModel(lm.model, layers)
            try:
                wrapped.set_control(control, alpha)
                wrapped.generate(ids, **hf_kwargs)
            finally:
                wrapped.unwrap()

        times = interleaved_medians({
            "steer-away": lambda p=prompts: generate(lm, p, method=ours_method, config=cfg),
            "steering-vectors": run_sv,
            "repeng": run_repeng,
            "unsteered (HF generate)": lambda ids=ids, hf_kwargs=hf_kwargs: lm.model.generate(ids, **hf_kwargs),
        }, lm.device, args.repeats, args.warmup)
        for name, seconds in times.items():
            rows.append([name, str(batch), f"{batch * args.tokens / seconds:.1f}",
                         f"{seconds / times['steer-away']:.2f}" if name != "steer-away" else "1.00"])
    print_table(f"CAA-steered greedy generation, α={alpha}, {args.tokens} tokens per row",
                ["library", "batch", "tokens/s", "ours ÷ theirs (speed)"], rows)
    print("\nGoals: ours ÷ theirs ≥ 1.0; cosine ≥ 0.999.")


if __name__ == "__main__":
    main()
