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

KV = Sequence[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), (rows, kv heads, length, head dim)

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
    prefixed: torch.Tensor  # the rows that start with a shared prefix, prefix by prefix
    groups: list[tuple[int, SharedPrefix]]  # each prefix and how many of `prefixed` (in turn) start with it

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
    `start`); None when no prefix starts two rows (a prefix read once for one row saves nothing, and
    the extra attention costs: EADS at batch 1 ran 1.50× unsteered so, 1.37× without), or this torch
    cannot merge attentions."""
    if _ATTEND is None:
        return None
    rows_of: dict[int, list[int]] = {}  # by the keys' identity: one prefix cache entry
    for row, entry in enumerate(prefixes):
        if entry is not None:
            rows_of.setdefault(id(entry[0].layers), []).append(row)
    shared = {row for rows in rows_of.values() if len(rows) > 1 for row in rows}
    if not shared:
        return None
    first_attended = mask.bool().float().argmax(-1).tolist()
    firsts = [entry[1] if row in shared and entry is not None else start + first_attended[row]
              for row, entry in enumerate(prefixes)]  # where each row's own columns begin
    own_start = min(firsts)
    groups: list[tuple[int, SharedPrefix]] = []  # (rows, prefix), the rows listed group by group in `prefixed`
    prefixed: list[int] = []
    for rows in rows_of.values():
        entry = prefixes[rows[0]]
        if len(rows) > 1 and entry is not None:
            groups.append((len(rows), entry[0]))
            prefixed += rows
    device = mask.device
    return PrefixPlan(own_start, torch.tensor([f - own_start for f in firsts], device=device),
                      torch.tensor(prefixed, device=device), groups)


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, layer: int, plan: PrefixPlan,
           own_mask: torch.Tensor, start: int, scale: float) -> torch.Tensor:
    """One layer's attention for one new token per row: `query` (rows, heads, 1, head dim), `keys` /
    `values` the cache's live columns from `start` (rows, kv heads, columns, head dim)."""
    assert _ATTEND is not None
    own_keys, own_values = keys[:, :, plan.own_start - start:], values[:, :, plan.own_start - start:]
    out, lse = _ATTEND(query, own_keys, own_values, 0.0, False, attn_mask=own_mask, scale=scale)
    queries = query.index_select(0, plan.prefixed)
    parts, part_lses, first = [], [], 0
    for count, prefix in plan.groups:  # each prefix's rows as one batch of queries against its one copy
        prefix_keys, prefix_values = prefix.layers[layer]
        part, part_lse = _ATTEND(queries[first:first + count].permute(2, 1, 0, 3), prefix_keys, prefix_values,
                                 0.0, False, scale=scale)
        parts.append(part.permute(2, 1, 0, 3))
        part_lses.append(part_lse.permute(2, 1, 0))
        first += count
    theirs, their_lse = torch.cat(parts), torch.cat(part_lses)
    mine, my_lse = out.index_select(0, plan.prefixed), lse.index_select(0, plan.prefixed)
    top = torch.maximum(my_lse, their_lse)
    mine_w, their_w = torch.exp(my_lse - top)[..., None], torch.exp(their_lse - top)[..., None]
    # the kernel's log-sum-exps are float32 whatever the model's dtype: merge in float, store in its own
    out.index_copy_(0, plan.prefixed, ((mine * mine_w + theirs * their_w) / (mine_w + their_w)).to(out.dtype))
    return out
