"""KV caches as transformers keeps them: new, read per layer, rebuilt from per-layer tensors, and a
shared prefix's keys and values computed once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from steer_away.internals.architecture import Model


def new_kv_cache(model: Model) -> object:
    return DynamicCache(config=model.config)


def prefix_kv(model: Model, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's keys and values for one unpadded token sequence (1, len), to reuse as a shared prefix."""
    cache = new_kv_cache(model)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
    model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), position_ids=positions,
          cache=cache, use_cache=True, logits_to_keep=1)
    return kv_layers(cache)


def kv_layers(cache: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's (keys, values) in a KV cache, (batch, kv heads, len, head dim) each."""
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[attr-defined]


def kv_cache_from(model: Model, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> object:
    """A KV cache holding the given per-layer (keys, values), (batch, kv heads, len, head dim) each."""
    cache = new_kv_cache(model)
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)  # type: ignore[attr-defined]
    return cache


