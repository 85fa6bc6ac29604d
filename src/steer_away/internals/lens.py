"""The logit lens: which tokens a residual-stream direction promotes."""

from __future__ import annotations

import torch

from steer_away.internals.architecture import LayerError, Model, get_path

_FINAL_NORM_PATHS = ("model.norm", "model.language_model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm",
                     "model.decoder.final_layer_norm")


@torch.inference_mode()
def unembed_direction(model: Model, direction: torch.Tensor) -> torch.Tensor:
    """Logit lens for a residual-stream direction: the output embedding applied to it after the final
    norm's gain (not its normalisation: a direction has no scale of its own to normalise)."""
    head = model.get_output_embeddings()
    if head is None:
        raise LayerError(f"{type(model).__name__} has no output embedding to read a logit lens from")
    vec = direction.to(head.weight.device, head.weight.dtype)
    for path in _FINAL_NORM_PATHS:
        norm = get_path(model, path)
        gain = getattr(norm, "weight", None) if norm is not None else None
        if isinstance(gain, torch.Tensor) and gain.shape == vec.shape:
            vec = vec * gain.to(vec.dtype)
            break
    return (head.weight @ vec).float()
