"""Where a model keeps its parts: decoder layers, hidden size, context length, and layer indices.

Every architecture-specific attribute path lives here; a new architecture is supported by adding
its paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from steer_away.errors import InputError

Model = Any  # a transformers causal LM; its attributes differ by architecture, hence untyped here

# Attribute paths to the stack of decoder blocks, tried in order.
_LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Phi-3
    "model.language_model.layers",  # multimodal wrappers (Gemma 3, Llama 4)
    "transformer.h",  # GPT-2, GPT-J, Falcon
    "gpt_neox.layers",  # Pythia
    "model.decoder.layers",  # OPT
)


class LayerError(InputError):
    """A layer index or range that does not exist in the model."""


def get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model: Model) -> torch.nn.ModuleList:
    for path in _LAYER_PATHS:
        found = get_path(model, path)
        if isinstance(found, torch.nn.ModuleList) and len(found) > 0:
            return found
    raise LayerError(
        f"cannot find the decoder layers of {type(model).__name__}; known layouts: {', '.join(_LAYER_PATHS)}"
    )


def num_layers(model: Model) -> int:
    return len(decoder_layers(model))


def hidden_size(model: Model) -> int:
    config = model.config
    config = getattr(config, "text_config", None) or config
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise LayerError(f"cannot find the hidden size in the config of {type(model).__name__}")


def check_layers(layers: Sequence[int], depth: int) -> list[int]:
    bad = [layer for layer in layers if not 0 <= layer < depth]
    if bad:
        raise LayerError(f"layer index {bad[0]} out of range: the model has layers 0-{depth - 1}")
    return sorted(set(layers))


def parse_layers(spec: str, depth: int | None) -> list[int]:
    """Parse a numeric layer spec, '14-20' or '3,5,7' ('seed', the study's layers, is read by
    `steering.layers.parse_layer_spec` before it gets here).

    Bounds are checked before a range is expanded, so '0-1000000000' fails at once instead of
    building a billion-element list; `depth=None` checks the syntax only (no model at hand yet).
    """
    spec = str(spec).strip()
    bounds: list[tuple[int, int]] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            bounds.append((first, last))
    except ValueError as err:
        raise LayerError(f"cannot parse layer spec '{spec}': use '14-20', '3,5,7' or 'seed'") from err
    for first, last in bounds:
        if first < 0 or last < first:
            raise LayerError(f"layer spec '{spec}': range {first}-{last} is empty or negative "
                             "(write the lower layer first, e.g. '15-20')")
        if depth is not None and last >= depth:
            raise LayerError(f"layer index {last} out of range: the model has layers 0-{depth - 1}")
    if depth is None:
        return []
    return check_layers([layer for first, last in bounds for layer in range(first, last + 1)], depth)


def context_length(model: Model) -> int:
    """How many positions the model was built for (its context window)."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise LayerError(f"cannot find the context length in the config of {type(model).__name__}")


