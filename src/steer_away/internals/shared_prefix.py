"""Attention that reads a shared prefix once for all the rows that start with it (cascade attention).

EADS / ACD branches and profile prompting put a category's system prompt and example exchanges
(about 200 tokens on the embedded model) before every row of that category. Their keys and values
are computed once (the prefix cache) and copied into each row, so that the model's own forward can
read every row whole. A decode step of our own (`fast_decode`) need not: it attends over the rows'
own columns, and over each prefix once for all its rows (its rows' queries as one batch of queries
against the one copy), and merges the two by their log-sum-exps. A row without a prefix gets
exactly what one attention over its columns gives; a row with one, the same up to rounding.

`BatchCache` says which rows start with which prefix (`SharedPrefix`, the end column of its copy);
`prefix_plan` turns that into what a step needs, once per change of the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

KV = Sequence[tuple[torch.Tensor, torch.Tensor]]

# The CPU attention kernel that also returns each query's log-sum-exp (what merging needs); where this
# torch build lacks it, decode steps read every row whole.
_ATTEND = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


@dataclass(eq=False)
class SharedPrefix:
    """A prefix's keys and values, held once: per layer (1, kv heads, length, head dim)."""

    layers: KV


@dataclass(eq=False)
class PrefixPlan:
    """What a decode step needs to attend to shared prefixes once: the first column any row's own tokens
    take (`own_start`, in the cache's columns), each row's first own column counted from there, and
    the rows of each prefix."""

    own_start: int
    first_own: torch.Tensor  # (rows,)
    groups: list[tuple[torch.Tensor, SharedPrefix]]  # (row indices, their prefix)

    def own_mask(self, mask: torch.Tensor, start: int, dtype: torch.dtype) -> torch.Tensor:
        """The additive mask of the rows' own columns, (rows, 1, 1, columns), from the step's mask over
        the cache's live columns (rows, columns from `start`): a prefix copy is not attended twice."""
        own = mask[:, self.own_start - start:].bool()
        columns = torch.arange(own.shape[1], device=own.device)
        own = own & (columns[None, :] >= self.first_own[:, None])
        return torch.zeros(own.shape, dtype=dtype, device=own.device).masked_fill(~own, float("-inf"))[:, None, None]


def prefix_plan(prefixes: Sequence[tuple[SharedPrefix, int] | None], mask: torch.Tensor, start: int) -> PrefixPlan | None:
    """The plan for rows whose prefixes are `prefixes` (per row: its prefix and the column its copy ends
    at, or None) and whose attention mask over the cache's live columns is `mask` (rows, columns from
    `start`); None when no row has a prefix, or this torch cannot merge attentions."""
    if _ATTEND is None or not any(prefixes):
        return None
    first_attended = mask.bool().float().argmax(-1).tolist()
    firsts = [entry[1] if entry is not None else start + first for entry, first in zip(prefixes, first_attended)]
    own_start = min(firsts)
    groups: dict[int, tuple[list[int], SharedPrefix]] = {}  # by the keys' identity: one prefix cache entry
    for row, entry in enumerate(prefixes):
        if entry is not None:
            groups.setdefault(id(entry[0].layers), ([], entry[0]))[0].append(row)
    device = mask.device
    return PrefixPlan(own_start, torch.tensor([f - own_start for f in firsts], device=device),
                      [(torch.tensor(rows, device=device), prefix) for rows, prefix in groups.values()])


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, layer: int, plan: PrefixPlan,
           own_mask: torch.Tensor, start: int, scale: float) -> torch.Tensor:
    """One layer's attention for one new token per row: `query` (rows, heads, 1, head dim), `keys` /
    `values` the cache's live columns from `start` (rows, kv heads, columns, head dim)."""
    assert _ATTEND is not None
    own_keys, own_values = keys[:, :, plan.own_start - start:], values[:, :, plan.own_start - start:]
    out, lse = _ATTEND(query, own_keys, own_values, 0.0, False, attn_mask=own_mask, scale=scale)
    for rows, prefix in plan.groups:
        prefix_keys, prefix_values = prefix.layers[layer]
        queries = query.index_select(0, rows).permute(2, 1, 0, 3)  # its rows as one batch of queries
        theirs, their_lse = _ATTEND(queries, prefix_keys, prefix_values, 0.0, False, scale=scale)
        theirs, their_lse = theirs.permute(2, 1, 0, 3), their_lse.permute(2, 1, 0)
        mine, my_lse = out.index_select(0, rows), lse.index_select(0, rows)
        top = torch.maximum(my_lse, their_lse)
        mine_w, their_w = torch.exp(my_lse - top)[..., None], torch.exp(their_lse - top)[..., None]
        out.index_copy_(0, rows, (mine * mine_w + theirs * their_w) / (mine_w + their_w))
    return out
