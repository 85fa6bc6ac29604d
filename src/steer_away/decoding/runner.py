"""One forward pass over the running batch's rows, every request's residual edits stacked into it.

Residual-stream edits (CAA) are data, not hooks (`PreparedBatch.edits`): the runner stacks every
request's α·v into one tensor per layer and intervention, zero for rows that are not steered there
or whose gate (counted on the request's own step clock) is closed, and hands them to the model
layer for that pass only. Every registered method can therefore share a step with every other: the
interventions leave a row with a zero edit exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steer_away import internals
from steer_away.chat import Conversation
from steer_away.decoding.kv_cache import RunningBatch, encode_rows
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


class ModelRunner:
    """Runs prefill and decode passes; keeps the decode edits while the batch and its gates are unchanged."""

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self._edit_key: tuple[object, ...] | None = None
        self._edits: dict[int, Edit] = {}

    def batch_changed(self) -> None:
        """Rows joined or left: the stacked decode edits must be rebuilt."""
        self._edit_key = None

    def prefill(self, joining: Sequence[DecodeRequest]) -> tuple[torch.Tensor, RunningBatch]:
        """The joiners' first logits (their rows, vocab) and their cache and mask."""
        texts = [text for r in joining for text in RunState.of(r).texts]
        prefixes: list[Conversation | None] = []
        for request in joining:
            state = RunState.of(request)
            own = state.prepared.prefixes
            prefixes += [branch[0] for branch in own] if own else [None] * state.width
        ids, mask, cache = encode_rows(self.lm, texts, prefixes)
        edits = stacked_edits(joining, len(texts), self.lm)
        logits = internals.forward_step(self.lm.model, ids, mask, cache, edits)
        return logits, RunningBatch(self.lm, cache, mask)

    def decode(self, running: Sequence[DecodeRequest], batch: RunningBatch) -> torch.Tensor:
        """Feed each running request's last token (once per branch row); its rows' next logits."""
        rows = sum(r.width for r in running)
        ids = torch.tensor([RunState.of(r).next_token for r in running for _ in range(r.width)], device=self.lm.device)
        mask = batch.grow()
        key = tuple((id(r), _gate_open(RunState.of(r))) for r in running)
        if key != self._edit_key:
            self._edits, self._edit_key = stacked_edits(running, rows, self.lm), key
        return internals.forward_step(self.lm.model, ids[:, None], mask, batch.cache, self._edits)
