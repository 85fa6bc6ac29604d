"""The one module that touches a model's internals: decoder layers, residual hooks, KV caches.

Everything else in steer-away works on tensors and plain Python objects; when a new
architecture needs support, this is the file to change.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

Model = Any  # a transformers causal LM; its attributes differ by architecture, hence untyped here

# Attribute paths to the stack of decoder blocks, tried in order.
_LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Phi-3
    "model.language_model.layers",  # multimodal wrappers (Gemma 3, Llama 4)
    "transformer.h",  # GPT-2, GPT-J, Falcon
    "gpt_neox.layers",  # Pythia
    "model.decoder.layers",  # OPT
)

REFERENCE_DEPTH = 32  # layer ranges in the seeds are given for Llama-3.1-8B's 32 layers
SEED_LAYERS = (16, 22)  # inclusive, from the CAA study


class LayerError(ValueError):
    """A layer index or range that does not exist in the model."""


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model: Model) -> torch.nn.ModuleList:
    for path in _LAYER_PATHS:
        found = _get_path(model, path)
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


def map_layer_range(first: int, last: int, depth: int, reference_depth: int = REFERENCE_DEPTH) -> list[int]:
    """Map an inclusive layer range given for a `reference_depth`-layer model onto `depth` layers.

    Relative depth is kept, so the seeds' 16-22 of 32 becomes 15-20 of 30 for SmolLM2.
    """
    if not 0 <= first <= last < reference_depth:
        raise LayerError(f"layer range {first}-{last} is outside 0-{reference_depth - 1}")
    lo = round(first * depth / reference_depth)
    hi = round(last * depth / reference_depth)
    return list(range(lo, max(lo, hi) + 1))


def default_layers(model: Model) -> list[int]:
    return map_layer_range(*SEED_LAYERS, depth=num_layers(model))


def check_layers(layers: Sequence[int], depth: int) -> list[int]:
    bad = [layer for layer in layers if not 0 <= layer < depth]
    if bad:
        raise LayerError(f"layer index {bad[0]} out of range: the model has layers 0-{depth - 1}")
    return sorted(set(layers))


def parse_layers(spec: str, depth: int | None) -> list[int]:
    """Parse '14-20', '3,5,7' or 'seed' (the seeds' 16-22 mapped to this depth).

    Bounds are checked before a range is expanded, so '0-1000000000' fails at once instead of
    building a billion-element list; `depth=None` checks the syntax only (no model at hand yet).
    """
    spec = str(spec).strip()
    if spec == "seed":
        return map_layer_range(*SEED_LAYERS, depth=depth) if depth is not None else []
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


def _residual(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def residual_hooks(
    model: Model,
    edits: dict[int, Callable[[torch.Tensor], None]],
) -> Iterator[None]:
    """Run `edits[layer](hidden)` in place on each listed layer's residual output, inside the scope.

    Every hook is removed on exit, on error too. Which steps are edited is the caller's business
    (the decode loop installs a step's edits for that step's forward pass only).
    """
    layers = decoder_layers(model)
    check_layers(list(edits), len(layers))
    handles = []
    try:
        for index, edit in edits.items():
            def hook(_module: torch.nn.Module, _args: tuple[Any, ...], output: Any,
                     edit: Callable[[torch.Tensor], None] = edit) -> None:
                edit(_residual(output))

            handles.append(layers[index].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def record_residuals(model: Model, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Capture each listed layer's residual output (batch, seq, hidden) from the next forward pass."""
    captured: dict[int, torch.Tensor] = {}

    def make(index: int) -> Callable[[torch.Tensor], None]:
        def keep(hidden: torch.Tensor) -> None:
            captured[index] = hidden.detach()

        return keep

    with residual_hooks(model, {layer: make(layer) for layer in layers}):
        yield captured


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the layers we need have run."""


@torch.inference_mode()
def residuals_at(model: Model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Residual outputs (batch, seq, hidden) of the listed layers; the rest of the model is skipped.

    Stopping after the deepest listed layer saves the remaining layers and the LM head, which on a
    small model with a large vocabulary costs as much as the layers themselves.
    """
    last = max(layers)

    def stop(_module: torch.nn.Module, _args: tuple, _output: object) -> None:
        raise _StopForward

    with record_residuals(model, layers) as captured:
        handle = decoder_layers(model)[last].register_forward_hook(stop)
        try:
            positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
    return captured


def context_length(model: Model) -> int:
    """How many positions the model was built for (its context window)."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise LayerError(f"cannot find the context length in the config of {type(model).__name__}")


def new_kv_cache(model: Model) -> object:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


Edit = Callable[[torch.Tensor], None]


def forward_step(
    model: Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: object,
    edits: dict[int, Edit] | None = None,
) -> torch.Tensor:
    """One forward pass over new tokens with a KV cache; returns last-position logits (batch, vocab).

    `edits[layer](hidden)` runs in place on that layer's residual output during this pass only.
    Position ids follow the attention mask so left-padded rows get the positions they would have
    unpadded. One-token decode steps of a Llama-family model on the CPU take `FastDecoder` (same
    arithmetic, without the framework's per-module overhead) unless STEER_AWAY_FAST_DECODE=0 or a
    hook is installed on the model (then the hook must run, so the model's own forward does).
    """
    if input_ids.shape[1] == 1:  # a decode step: the new token's position is the count of real tokens before it
        fast = fast_decoder(model)
        if fast is not None:
            return fast.step(input_ids, attention_mask, cache, edits or {})
        positions = attention_mask.sum(-1, keepdim=True) - 1
    else:
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
    with residual_hooks(model, edits or {}):
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return out.logits[:, -1, :]


# --- the CPU decode step for Llama-family models ---------------------------------------------------
#
# Profiling a batch-1 decode step of SmolLM2-135M on 2 CPU cores (bench/README.md) put ~70 % of it
# in matrix-vector products that read the weights at about half the machine's read bandwidth, and
# most of the rest in per-module framework overhead. A step written as a dozen tensor operations
# per layer, with the q/k/v and gate/up projections fused and, for up to three rows, the weights
# stored input-major (the layout this CPU's BLAS reads fastest for a single row), removes most of
# both. Same operations in the same order as transformers' Llama, so greedy tokens match it.

FAST_DECODE_TYPES = ("llama",)  # architectures whose decoder layer is exactly the one FastDecoder runs
NARROW_ROWS = 3  # up to this many rows input-major weight copies are faster here (measured); above, the model's own
NARROW_COPY_LIMIT = 2 * 2**30  # bytes: models larger than this get no input-major copies (memory)
_FAST: weakref.WeakKeyDictionary[Any, FastDecoder | None] = weakref.WeakKeyDictionary()  # per model


def fast_decode_enabled() -> bool:
    import os

    return os.environ.get("STEER_AWAY_FAST_DECODE", "1") != "0"


def _hooked(model: Model) -> bool:
    from torch.nn.modules import module as nn_module

    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    watched = [model, _get_path(model, "model"), model.get_output_embeddings(), *decoder_layers(model)]
    for module in watched:
        if module is None:
            continue
        if hasattr(module, "_hf_hook"):  # accelerate's device-placement / offloading wrapper
            return True
        for hook in (*module._forward_hooks.values(), *module._forward_pre_hooks.values()):
            # transformers leaves its own output-capturing hooks installed once any call asked for
            # hidden states; they record nothing unless asked, so they do not need the model's forward
            if not getattr(hook, "__module__", "").startswith("transformers."):
                return True
    return False


def fast_decoder(model: Model) -> FastDecoder | None:
    """The model's FastDecoder when it can take this step (built once per model), else None."""
    if not fast_decode_enabled() or model.device.type != "cpu" or _hooked(model):
        return None
    if model not in _FAST:
        _FAST[model] = FastDecoder.build(model)
    return _FAST[model]


class FastDecoder:
    """A Llama decoder's one-token step as plain tensor operations (see the note above)."""

    def __init__(self, model: Model) -> None:
        config = model.config  # no reference to the model itself is kept: it keys the cache of decoders
        self.eps = float(config.rms_norm_eps)
        self.heads, self.kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.inter = int(config.intermediate_size)
        self.scaling = model.model.layers[0].self_attn.scaling
        self.rotary = model.model.rotary_emb
        self.embed = model.model.embed_tokens.weight
        self.norm = model.model.norm.weight
        self.head = model.lm_head.weight
        self.layers = []
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append((layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
                                torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
                                attn.o_proj.weight, torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                                mlp.down_proj.weight))
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        self.narrow: list[tuple[torch.Tensor, ...]] | None = None
        self.narrow_head: torch.Tensor | None = None
        if size <= NARROW_COPY_LIMIT:
            self.narrow = [tuple(w.t().contiguous() for w in weights[2:]) for weights in self.layers]
            self.narrow_head = self.head.t().contiguous()

    @classmethod
    def build(cls, model: Model) -> FastDecoder | None:
        config = model.config
        inner = _get_path(model, "model")
        if (config.model_type not in FAST_DECODE_TYPES or inner is None or getattr(config, "attention_bias", False)
                or getattr(config, "mlp_bias", False) or getattr(config, "hidden_act", "silu") != "silu"
                or getattr(model.lm_head, "bias", None) is not None or getattr(config, "pretraining_tp", 1) > 1):
            return None
        return cls(model)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return weight * (x * torch.rsqrt(variance + self.eps))

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: object,
             edits: dict[int, Edit]) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        rows = input_ids.shape[0]
        narrow = self.narrow is not None and rows <= NARROW_ROWS

        def linear(x: torch.Tensor, own: torch.Tensor, transposed: torch.Tensor | None) -> torch.Tensor:
            return x @ transposed if narrow and transposed is not None else torch.nn.functional.linear(x, own)

        x = torch.nn.functional.embedding(input_ids, self.embed)
        positions = attention_mask.sum(-1, keepdim=True) - 1
        cos, sin = self.rotary(x, positions)
        mask = attention_mask[:, None, None, :].bool()
        q_width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        for index, (norm_in, norm_post, qkv_w, o_w, gate_up_w, down_w) in enumerate(self.layers):
            t_qkv, t_o, t_gate_up, t_down = self.narrow[index] if self.narrow is not None else (None,) * 4
            qkv = linear(self._rms(x, norm_in), qkv_w, t_qkv)
            q = qkv[..., :q_width].view(rows, 1, self.heads, self.head_dim).transpose(1, 2)
            k = qkv[..., q_width:q_width + kv_width].view(rows, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = qkv[..., q_width + kv_width:].view(rows, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k, v = cache.update(k, v, index)  # type: ignore[attr-defined]
            attended = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=self.heads != self.kv_heads)
            x = x + linear(attended.transpose(1, 2).reshape(rows, 1, q_width), o_w, t_o)
            gate_up = linear(self._rms(x, norm_post), gate_up_w, t_gate_up)
            x = x + linear(torch.nn.functional.silu(gate_up[..., :self.inter]) * gate_up[..., self.inter:],
                           down_w, t_down)
            edit = edits.get(index)
            if edit is not None:
                edit(x)
        return linear(self._rms(x, self.norm), self.head, self.narrow_head)[:, -1]


def prefix_kv(model: Model, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's keys and values for one unpadded token sequence (1, len), to reuse as a shared prefix."""
    cache = new_kv_cache(model)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
    model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), position_ids=positions,
          past_key_values=cache, use_cache=True, logits_to_keep=1)
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


def forward_full(model: Model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits at every position (batch, seq, vocab) with no cache: for scoring whole texts."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False).logits


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
        norm = _get_path(model, path)
        gain = getattr(norm, "weight", None) if norm is not None else None
        if isinstance(gain, torch.Tensor) and gain.shape == vec.shape:
            vec = vec * gain.to(vec.dtype)
            break
    return (head.weight @ vec).float()
