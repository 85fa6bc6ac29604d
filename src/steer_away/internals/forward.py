"""Forward passes the rest of steer-away runs: one step over new tokens with a KV cache (decoding,
prefill), every new position of a continuation after a cache, and a whole text without one."""

from __future__ import annotations

import os

import torch

from steer_away.internals.architecture import Model
from steer_away.internals.fast_decode import fast_decoder
from steer_away.internals.hooks import Edit, residual_hooks

GROUPED_SDPA = "TRANSFORMERS_SDPA_FORCE_GQA"  # transformers' switch, read at every attention call


def prefer_grouped_attention(device: torch.device) -> None:
    """On the CPU, let torch's attention read grouped key / value heads as they are. transformers otherwise
    copies them once per query head (`repeat_kv`) before every masked attention call: on SmolLM2 (3 key / value
    heads for 9 query heads) that copy was 24 % of the time EADS's cloze utility took, whose rows carry long
    shared prefixes; with it, the same call takes 30 % less time and every logit is bit-identical (greedy
    answers of every method too: bench/parity.py). Set only where unset, so TRANSFORMERS_SDPA_FORCE_GQA=0
    turns it off; never on CUDA, where a masked grouped call would fall back to the slow math kernel."""
    if device.type == "cpu":
        os.environ.setdefault(GROUPED_SDPA, "1")


@torch.inference_mode()  # caches are inference tensors: no pass through them needs gradients
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
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return out.logits[:, -1, :]


def forward_full(model: Model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits at every position (batch, seq, vocab) with no cache: for scoring whole texts."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False).logits



@torch.inference_mode()
def forward_positions(
    model: Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: object,
    edits: dict[int, Edit] | None = None,
) -> torch.Tensor:
    """Logits at every new position (batch, new, vocab) after a KV cache: for scoring continuations
    of an encoded context. The new tokens may be right-padded (masked); `edits` as for `forward_step`
    (an edit may differ per position), and the model's own forward always runs."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
    with residual_hooks(model, edits or {}):
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                    cache=cache, use_cache=True)
    return out.logits
