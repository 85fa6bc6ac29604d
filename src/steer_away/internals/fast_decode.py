"""An optional decode backend: a Llama-family model's one-token step on the CPU as plain tensor ops.

Chosen per model type (`FAST_DECODE_TYPES`) and built once per model; `forward_step` uses it when
it applies and the model's own forward otherwise. Parity with the model's forward is tested.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import torch
from torch.nn.modules import module as nn_module

from steer_away.internals.architecture import Model, decoder_layers, get_path
from steer_away.internals.hooks import Edit
from steer_away.internals.kv import BatchCache
from steer_away.internals.shared_prefix import attend

# Profiling a batch-1 decode step of SmolLM2-135M on 2 CPU cores (bench/README.md) put ~70 % of it
# in matrix-vector products that read the weights at about half the machine's read bandwidth, and
# most of the rest in per-module framework overhead. A step written as a dozen tensor operations
# per layer, with the q/k/v and gate/up projections fused and, for up to three rows, the weights
# stored input-major (the layout this CPU's BLAS reads fastest for a single row), removes most of
# both. Same operations in the same order as transformers' Llama, so greedy tokens match it.

FAST_DECODE_TYPES = ("llama",)  # architectures whose decoder layer is exactly the one FastDecoder runs
# Row counts whose projections run faster on the model's own (output-major) weights than on the
# input-major copies: the BLAS picks its kernel by the row count. A whole decode step of the embedded
# model, median of 15, ms, own weights / input-major copies: 1 row 27.9 / 26.5; 2 rows 30.5 / 37.4;
# 3 rows 32.0 / 39.2; 4 rows 45.8 / 41.4; 8 rows 59.0 / 53.6; 12 rows 72.4 / 62.6; 16 rows 60.5 / 66.1;
# 24 rows 67.8 / 64.7; 48 rows 91.2 / 91.5; 64 rows 113.8 / 108.8; 128 rows 173.0 / 160.7. Fixed, not
# tuned at run time: the layout changes the last bits of a product, and an answer must not depend on
# a timing.
OWN_WEIGHT_ROWS = frozenset({2, 3, 16})
NARROW_COPY_LIMIT = 2 * 2**30  # bytes: models larger than this get no input-major copies (memory)
_FAST: weakref.WeakKeyDictionary[Any, FastDecoder | None] = weakref.WeakKeyDictionary()  # per model


def fast_decode_enabled() -> bool:
    return os.environ.get("STEER_AWAY_FAST_DECODE", "1") != "0"


def _hooked(model: Model) -> bool:
    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    watched = [model, get_path(model, "model"), model.get_output_embeddings(), *decoder_layers(model)]
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
        # imported here: Llama's modeling module takes seconds to import and only this backend needs it
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.rotate = apply_rotary_pos_emb
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
        inner = get_path(model, "model")
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
        rows = input_ids.shape[0]
        narrow = self.narrow is not None and rows not in OWN_WEIGHT_ROWS

        def linear(x: torch.Tensor, own: torch.Tensor, transposed: torch.Tensor | None) -> torch.Tensor:
            return x @ transposed if narrow and transposed is not None else torch.nn.functional.linear(x, own)

        x = torch.nn.functional.embedding(input_ids, self.embed)
        positions = attention_mask.sum(-1, keepdim=True) - 1
        cos, sin = self.rotary(x, positions)
        mask = attention_mask[:, None, None, :].bool()
        # rows starting with a shared prefix: each prefix is read once for all of them (shared_prefix.py)
        plan, own_mask, start = None, None, 0
        if isinstance(cache, BatchCache):
            plan, start = cache.prefix_plan(), cache.start
            own_mask = plan.own_mask(attention_mask, start, x.dtype) if plan is not None else None
        q_width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        for index, (norm_in, norm_post, qkv_w, o_w, gate_up_w, down_w) in enumerate(self.layers):
            t_qkv, t_o, t_gate_up, t_down = self.narrow[index] if self.narrow is not None else (None,) * 4
            qkv = linear(self._rms(x, norm_in), qkv_w, t_qkv)
            q = qkv[..., :q_width].view(rows, 1, self.heads, self.head_dim).transpose(1, 2)
            k = qkv[..., q_width:q_width + kv_width].view(rows, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = qkv[..., q_width + kv_width:].view(rows, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self.rotate(q, k, cos, sin)
            k, v = cache.update(k, v, index)  # type: ignore[attr-defined]
            if plan is not None and own_mask is not None:
                attended = attend(q, k, v, index, plan, own_mask, start, self.scaling)
            else:
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


