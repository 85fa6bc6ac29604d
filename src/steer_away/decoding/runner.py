"""Forward passes over rows of the KV cache, every request's residual edits stacked into them.

Residual-stream edits (CAA) are data, not hooks (`PreparedBatch.edits`): the runner stacks every
row's α·v into one tensor per layer and intervention, zero for rows that are not steered there or
whose gate (counted on the request's own step clock) is closed, and hands them to the model layer
for that pass only. Every registered method can therefore share a step with every other: the
interventions leave a row with a zero edit exactly as it was. The same stacking serves decoding
(the running batch), prefill (joiners, identical rows fed once) and the scoring passes of
`decoding.scoring` (a whole prepared batch, gated per position as decoding would gate it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from steer_away import internals
from steer_away.decoding.kv_cache import Owner, RunningBatch, encode_rows
from steer_away.decoding.request import DecodeRequest, RunState
from steer_away.internals import BatchCache, Edit
from steer_away.models import LanguageModel
from steer_away.steering.framework.method import PreparedBatch, ResidualEdits

EditRow = tuple[ResidualEdits | None, int, bool]  # one row of a pass: its edits, its row in them, whether its gate is open


def gate_open(edits: ResidualEdits | None, step: int) -> bool:
    """Whether `edits` apply at a request's `step` (0: its prefill)."""
    return edits is not None and (edits.gate is None or edits.gate(step))


def stacked_edits(rows: Sequence[EditRow], lm: LanguageModel) -> dict[int, Edit]:
    """One in-place edit per layer for a pass over these rows, in order (zeros where a row has no
    edits there or its gate is closed)."""
    stacked: dict[tuple[int, object], torch.Tensor] = {}
    for row, (edits, source, open_) in enumerate(rows):
        if edits is None or not open_:
            continue
        for layer, delta in edits.deltas.items():
            key = (layer, edits.intervention)
            if key not in stacked:
                stacked[key] = torch.zeros((len(rows), 1, delta.shape[-1]), device=lm.device, dtype=lm.dtype)
            stacked[key][row] = delta[source]
    return _by_layer(stacked)


def batch_edits(prepared: PreparedBatch, steps: Sequence[int], lm: LanguageModel) -> dict[int, Edit]:
    """A whole prepared batch's edits for a pass whose positions are fed at these steps of the decoder
    (one step: a prefill or a context; several: a continuation scored position by position), each
    position edited where the gate is open then, as decoding would edit it."""
    edits = prepared.edits
    if edits is None:
        return {}
    open_ = [gate_open(edits, step) for step in steps]
    if not any(open_):
        return {}
    stacked: dict[tuple[int, object], torch.Tensor] = {}
    for layer, delta in edits.deltas.items():
        delta = delta.to(device=lm.device, dtype=lm.dtype)
        if not all(open_):
            delta = delta * torch.tensor(open_, device=lm.device, dtype=lm.dtype)[None, :, None]
        stacked[(layer, edits.intervention)] = delta
    return _by_layer(stacked)


def _by_layer(stacked: dict[tuple[int, object], torch.Tensor]) -> dict[int, Edit]:
    by_layer: dict[int, list[Edit]] = {}
    for (layer, intervention), delta in stacked.items():
        by_layer.setdefault(layer, []).append(intervention(delta))  # type: ignore[operator]
    return {layer: fns[0] if len(fns) == 1 else _chain(fns) for layer, fns in by_layer.items()}


def _chain(fns: list[Edit]) -> Edit:
    def edit(hidden: torch.Tensor) -> None:
        for fn in fns:
            fn(hidden)

    return edit


def _edit_row(owner: Owner) -> EditRow:
    request, branch = owner
    state = RunState.of(request)
    edits = state.prepared.edits
    return edits, branch, gate_open(edits, state.steps)


MIN_CHUNK_COLUMNS = 16  # a prefill chunk is never narrower: narrower passes cost more than they save


@dataclass(eq=False)
class PrefillGroup:
    """Requests being prefilled together, possibly over several steps (chunked prefill). Rows that are
    the same (text, shared prefix and residual edits: the samples of one prompt, say) are fed once
    and copied into the running batch for each request that has them."""

    requests: list[DecodeRequest]
    owners: list[Owner]  # the joiners' rows, request by request, branch by branch
    sources: list[int]  # each owner's row among the rows fed
    ids: torch.Tensor  # (rows fed, columns): every fed row's tokens, left-padded
    mask: torch.Tensor  # (rows fed, shared-prefix columns + columns)
    cache: BatchCache  # grows by each chunk fed
    edits: dict[int, Edit]  # the fed rows' residual edits, stacked once for every chunk
    fed: int = 0  # columns of `ids` fed so far


def _row_key(owner: Owner) -> Hashable:
    """What makes two joiners' rows compute the same keys and logits at prefill: the text, the prefix
    shared out of it, and the residual edits applied at step 0 (by value)."""
    request, branch = owner
    state = RunState.of(request)
    prefixes = state.prepared.prefixes
    prefix = prefixes[branch][0] if prefixes else None
    edits = state.prepared.edits
    signature: Hashable = None
    if gate_open(edits, 0):
        assert edits is not None
        signature = (edits.intervention, tuple(
            (layer, hashlib.sha1(delta[branch].detach().to("cpu", torch.float32).numpy().tobytes()).hexdigest())
            for layer, delta in sorted(edits.deltas.items())))
    return state.texts[branch], json.dumps(prefix), signature


class ModelRunner:
    """Runs prefill and decode passes; keeps the decode edits while the batch and its gates are unchanged."""

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self._edit_key: tuple[object, ...] | None = None
        self._edits: dict[int, Edit] = {}
        self.rows_joined = 0  # joiners' rows so far ...
        self.rows_prefilled = 0  # ... and how many of them were fed (identical rows are fed once)

    def start_prefill(self, joining: Sequence[DecodeRequest]) -> PrefillGroup:
        """The joiners' rows encoded (shared prefixes from the prefix cache, identical rows once), nothing fed yet."""
        owners: list[Owner] = [(r, b) for r in joining for b in range(RunState.of(r).width)]
        fed: dict[Hashable, int] = {}
        sources: list[int] = []
        unique: list[Owner] = []
        for owner in owners:
            key = _row_key(owner)
            if key not in fed:
                fed[key] = len(unique)
                unique.append(owner)
            sources.append(fed[key])
        texts, prefixes = [], []
        for request, branch in unique:
            state = RunState.of(request)
            texts.append(state.texts[branch])
            prefixes.append(state.prepared.prefixes[branch][0] if state.prepared.prefixes else None)
        ids, mask, cache = encode_rows(self.lm, texts, prefixes)
        self.rows_joined += len(owners)
        self.rows_prefilled += len(unique)
        return PrefillGroup(list(joining), owners, sources, ids, mask, cache,
                            stacked_edits([_edit_row(o) for o in unique], self.lm))

    def without_done(self, group: PrefillGroup) -> PrefillGroup:
        """The group less the rows of requests that ended while it was prefilled (their clients left),
        so that no more of their prompts is fed."""
        live = [r for r in group.requests if not r.done]
        if len(live) == len(group.requests):
            return group
        owners = [(r, b) for r, b in group.owners if not r.done]
        old = [s for (r, _), s in zip(group.owners, group.sources) if not r.done]
        kept = sorted(set(old))
        renumber = {s: i for i, s in enumerate(kept)}
        representative = {s: o for o, s in zip(owners, old)}
        cache = group.cache.take(kept, extra=group.ids.shape[1] - group.fed)
        return PrefillGroup(live, owners, [renumber[s] for s in old],
                            group.ids.index_select(0, torch.tensor(kept, device=group.ids.device)),
                            group.mask.index_select(0, torch.tensor(kept, device=group.mask.device)), cache,
                            stacked_edits([_edit_row(representative[s]) for s in kept], self.lm), group.fed)

    def advance_prefill(self, group: PrefillGroup, chunk: int | None) -> torch.Tensor | None:
        """Feed the group its next columns: all that are left (`chunk` None), or about `chunk` tokens
        over all its rows. The fed rows' first logits (rows fed, vocab) once the whole prompt is in."""
        rows, columns = group.ids.shape
        end = columns
        if chunk is not None:
            end = min(columns, group.fed + max(MIN_CHUNK_COLUMNS, chunk // rows))
            if columns - end < MIN_CHUNK_COLUMNS:  # no sliver of a last chunk
                end = columns
        mask = group.cache.attention_mask(end - group.fed, attend=False)
        logits = internals.forward_step(self.lm.model, group.ids[:, group.fed:end], mask, group.cache, group.edits)
        group.fed = end
        return logits if end == columns else None

    def decode(self, batch: RunningBatch) -> torch.Tensor:
        """Feed every running row its request's last token; the rows' next logits, in slot order."""
        owners = batch.owners
        ids = torch.tensor([RunState.of(request).next_token for request, _ in owners], device=self.lm.device)
        mask = batch.grow()
        key = (batch.version, *(gate_open(RunState.of(r).prepared.edits, RunState.of(r).steps) for r in batch.slots))
        if key != self._edit_key:
            self._edits, self._edit_key = stacked_edits([_edit_row(o) for o in owners], self.lm), key
        return internals.forward_step(self.lm.model, ids[:, None], mask, batch.cache, self._edits)
