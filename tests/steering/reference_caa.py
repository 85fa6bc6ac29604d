"""A small reference implementation of the original CAA recipe, kept only for tests.

It follows the structure of the CAA paper's code (Rimsky et al., 2023; nrimsky/CAA): each decoder
block is wrapped in a module that remembers its output, every prompt runs alone (no batching, no
padding), the activation is read at a fixed token index from the end (the answer letter of an A/B
question), and the vector is the mean over pairs of positive minus negative activations. It shares
no code with steer-away's extraction (no hooks, no masks, no batching), which is what makes it an
oracle for ours. Written by us from the paper's description; no code was copied.
"""

from __future__ import annotations

import torch


class _RecordingBlock(torch.nn.Module):
    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block
        self.last: torch.Tensor | None = None

    def forward(self, *args, **kwargs):
        output = self.block(*args, **kwargs)
        self.last = (output[0] if isinstance(output, tuple) else output).detach()
        return output


def caa_vector(model, tokenizer, positives: list[str], negatives: list[str], layers: list[int],
               token_index: int = -1) -> dict[int, torch.Tensor]:
    """{layer: mean over pairs of h_layer(positive)[token_index] − h_layer(negative)[token_index]}."""
    blocks = model.model.layers
    originals = {layer: blocks[layer] for layer in layers}
    for layer in layers:
        blocks[layer] = _RecordingBlock(originals[layer])
    try:
        def activations(text: str) -> dict[int, torch.Tensor]:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                model(ids)
            return {layer: blocks[layer].last[0, token_index].float() for layer in layers}

        diffs: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        for pos, neg in zip(positives, negatives):
            a, b = activations(pos), activations(neg)
            for layer in layers:
                diffs[layer].append(a[layer] - b[layer])
    finally:
        for layer in layers:
            blocks[layer] = originals[layer]
    return {layer: torch.stack(d).mean(0) for layer, d in diffs.items()}
