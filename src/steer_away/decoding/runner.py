"""One forward pass over the running batch's rows, every request's residual edits stacked into it.

Residual-stream edits (CAA) are data, not hooks (`PreparedBatch.edits`): the runner stacks every
request's α·v into one tensor per layer and intervention, zero for rows that are not steered there
or whose gate (counted on the request's own step clock) is closed, and hands them to the model
layer for that pass only. Every registered method can therefore share a step with every other: the
interventions leave a row with a zero edit exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steer_away import internals
from steer_away.chat import Conversation
from steer_away.decoding.kv_cache import RunningBatch, encode_rows, select_rows
from steer_away.decoding.request import DecodeRequest, RunState
from steer_away.internals import Edit
from steer_away.models import LanguageModel


def _gate_open(state: RunState) -> bool | None:
    edits = state.prepared.edits
    return edits.gate(state.steps) if edits is not None and edits.gate is not None else None


def stacked_edits(requests: Sequence[DecodeRequest], rows: int, lm: LanguageModel) -> dict[int, Edit]:
    """One in-place edit per layer for a forward pass over `requests`' rows, in order; a request
    whose gate is closed at its current step contributes zeros."""
    stacked: dict[tuple[int, object], torch.Tensor] = {}
    start = 0
    for request in requests:
        state = RunState.of(request)
        edits = state.prepared.edits
        if edits is not None and (edits.gate is None or edits.gate(state.steps)):
            for layer, delta in edits.deltas.items():
                key = (layer, edits.intervention)
                if key not in stacked:
                    stacked[key] = torch.zeros((rows, 1, delta.shape[-1]), device=lm.device, dtype=lm.dtype)
                stacked[key][start:start + state.width] = delta
        start += state.width
    by_layer: dict[int, list[Edit]] = {}
    for (layer, intervention), delta in stacked.items():
        by_layer.setdefault(layer, []).append(intervention(delta))  # type: ignore[operator]
    return {layer: fns[0] if len(fns) == 1 else _chain(fns) for layer, fns in by_layer.items()}


def _chain(fns: list[Edit]) -> Edit:
    def edit(hidden: torch.Tensor) -> None:
        for fn in fns:
            fn(hidden)

    return edit


MIN_CHUNK_COLUMNS = 16  # a prefill chunk is never narrower: narrower passes cost more than they save


@dataclass(eq=False)
class PrefillGroup:
    """Requests being prefilled together, possibly over several steps (chunked prefill)."""

    requests: list[DecodeRequest]
    ids: torch.Tensor  # (rows, columns): every row's tokens to feed, left-padded
    mask: torch.Tensor  # (rows, shared-prefix columns + columns)
    cache: object  # grows by each chunk fed
    edits: dict[int, Edit]  # the joiners' residual edits, stacked once for every chunk
    fed: int = 0  # columns of `ids` fed so far

    def batch(self, lm: LanguageModel) -> RunningBatch:
        return RunningBatch(lm, self.cache, self.mask)


class ModelRunner:
    """Runs prefill and decode passes; keeps the decode edits while the batch and its gates are unchanged."""

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self._edit_key: tuple[object, ...] | None = None
        self._edits: dict[int, Edit] = {}

    def batch_changed(self) -> None:
        """Rows joined or left: the stacked decode edits must be rebuilt."""
        self._edit_key = None

    def start_prefill(self, joining: Sequence[DecodeRequest]) -> PrefillGroup:
        """The joiners' rows encoded (shared prefixes from the prefix cache), nothing fed yet."""
        texts = [text for r in joining for text in RunState.of(r).texts]
        prefixes: list[Conversation | None] = []
        for request in joining:
            state = RunState.of(request)
            own = state.prepared.prefixes
            prefixes += [branch[0] for branch in own] if own else [None] * state.width
        ids, mask, cache = encode_rows(self.lm, texts, prefixes)
        return PrefillGroup(list(joining), ids, mask, cache, stacked_edits(joining, len(texts), self.lm))

    def without_done(self, group: PrefillGroup) -> PrefillGroup:
        """The group less the rows of requests that ended while it was prefilled (their clients left),
        so that no more of their prompts is fed."""
        live = [r for r in group.requests if not r.done]
        if len(live) == len(group.requests):
            return group
        rows: list[int] = []
        start = 0
        for request in group.requests:
            if not request.done:
                rows += range(start, start + request.width)
            start += request.width
        index = torch.tensor(rows, device=group.mask.device)
        layers = internals.kv_layers(group.cache)
        empty = not layers or layers[0][0] is None  # nothing fed and no shared prefix: no keys to cut yet
        cache = internals.new_kv_cache(self.lm.model) if empty else select_rows(self.lm, group.cache, index)
        return PrefillGroup(live, group.ids.index_select(0, index), group.mask.index_select(0, index), cache,
                            stacked_edits(live, len(rows), self.lm), group.fed)

    def advance_prefill(self, group: PrefillGroup, chunk: int | None) -> torch.Tensor | None:
        """Feed the group its next columns: all that are left (`chunk` None), or about `chunk` tokens
        over all its rows. The joiners' first logits (their rows, vocab) once the whole prompt is in."""
        rows, columns = group.ids.shape
        end = columns
        if chunk is not None:
            end = min(columns, group.fed + max(MIN_CHUNK_COLUMNS, chunk // rows))
            if columns - end < MIN_CHUNK_COLUMNS:  # no sliver of a last chunk
                end = columns
        cached = group.mask.shape[1] - columns  # shared-prefix columns already in the cache
        logits = internals.forward_step(self.lm.model, group.ids[:, group.fed:end], group.mask[:, :cached + end],
                                        group.cache, group.edits)
        group.fed = end
        return logits if end == columns else None

    def decode(self, running: Sequence[DecodeRequest], batch: RunningBatch) -> torch.Tensor:
        """Feed each running request's last token (once per branch row); its rows' next logits."""
        rows = sum(r.width for r in running)
        ids = torch.tensor([RunState.of(r).next_token for r in running for _ in range(r.width)], device=self.lm.device)
        mask = batch.grow()
        key = tuple((id(r), _gate_open(RunState.of(r))) for r in running)
        if key != self._edit_key:
            self._edits, self._edit_key = stacked_edits(running, rows, self.lm), key
        return internals.forward_step(self.lm.model, ids[:, None], mask, batch.cache, self._edits)
