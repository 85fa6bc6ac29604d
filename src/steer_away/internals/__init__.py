"""The model-adapter layer: the only code that touches a model's internals.

- `architecture`: where the decoder layers, hidden size and context length are, layer indices;
- `hooks`: residual-stream edits and recordings in scopes that remove themselves;
- `kv`: `BatchCache`, the KV cache written in place that every pass uses, and shared prefixes;
- `forward`: the forward passes everything else runs (a step with a cache, a whole text);
- `fast_decode`: an optional CPU decode backend for Llama-family models, chosen per model type;
- `lens`: the logit lens.

Everything above this layer calls the names exported here, so supporting a new architecture or a
new transformers cache API changes this package only.
"""

from steer_away.internals.architecture import (
    LayerError,
    Model,
    check_layers,
    context_length,
    decoder_layers,
    hidden_size,
    num_layers,
    parse_layers,
)
from steer_away.internals.fast_decode import FastDecoder, fast_decode_enabled, fast_decoder
from steer_away.internals.forward import forward_full, forward_positions, forward_step, prefer_grouped_attention
from steer_away.internals.hooks import Edit, record_residuals, residual_hooks, residuals_at
from steer_away.internals.kv import BatchCache, new_kv_cache, prefix_kv
from steer_away.internals.lens import unembed_direction
from steer_away.internals.shared_prefix import KV

__all__ = [
    "KV", "BatchCache", "Edit", "FastDecoder", "LayerError", "Model", "check_layers", "context_length",
    "decoder_layers", "fast_decode_enabled", "fast_decoder", "forward_full", "forward_positions", "forward_step",
    "hidden_size", "new_kv_cache", "num_layers", "parse_layers",
    "prefer_grouped_attention", "prefix_kv", "record_residuals", "residual_hooks", "residuals_at", "unembed_direction",
]
