"""Contrastive activation addition at generation time: add α·v_l to the residual stream.

Every row of a batch can carry its own user's vector and α: the per-layer additions are stacked
once per batch into a (batch, 1, hidden) tensor, so the hook is a single in-place add per layer
and step, with no allocation and no Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager

import torch

from steer_away import internals
from steer_away.steering.base import Conversation, PreparedBatch, RowSteering, SteeringMethod
from steer_away.steering.vectors import SteeringVector

Gate = str | int  # "all", "prefill", or K: steer the prefill and the first K-1 decode steps


def gate_function(gate: Gate) -> Callable[[int], bool] | None:
    if gate == "all":
        return None
    if gate == "prefill":
        return lambda step: step == 0
    if isinstance(gate, int) and gate >= 1:
        return lambda step: step < gate
    raise ValueError(f"gate must be 'all', 'prefill' or a positive number of tokens, got {gate!r}")


def _add(delta: torch.Tensor) -> Callable[[torch.Tensor], None]:
    def edit(hidden: torch.Tensor) -> None:
        hidden.add_(delta)

    return edit


def _add_keep_norm(delta: torch.Tensor) -> Callable[[torch.Tensor], None]:
    def edit(hidden: torch.Tensor) -> None:
        before = hidden.norm(dim=-1, keepdim=True)
        hidden.add_(delta)
        hidden.mul_(before / hidden.norm(dim=-1, keepdim=True).clamp(min=1e-6))

    return edit


class _ActivationBatch(PreparedBatch):
    def __init__(self, lm: object, conversations: list[Conversation], deltas: dict[int, torch.Tensor],
                 gate: Gate, keep_norm: bool) -> None:
        super().__init__([conversations])
        self._model = lm.model  # type: ignore[attr-defined]
        make = _add_keep_norm if keep_norm else _add
        self._edits = {layer: make(delta) for layer, delta in deltas.items()}
        self._active = gate_function(gate)

    def scope(self) -> AbstractContextManager[object]:
        return internals.residual_hooks(self._model, self._edits, active=self._active)


class ActivationSteering(SteeringMethod):
    """CAA with one vector for everyone, or one per user (unknown users get `default`)."""

    def __init__(
        self,
        vectors: SteeringVector | Mapping[str, SteeringVector],
        alpha: float,
        *,
        layers: Sequence[int] | None = None,
        gate: Gate = "all",
        keep_norm: bool = False,
        relative: bool = False,
        default: SteeringVector | None = None,
        name: str = "caa",
    ) -> None:
        gate_function(gate)  # validate early
        self.per_user = dict(vectors) if isinstance(vectors, Mapping) else {}
        self.default = default if isinstance(vectors, Mapping) else vectors
        if relative:
            self.per_user = {u: v.relative() for u, v in self.per_user.items()}
            self.default = self.default.relative() if self.default is not None else None
        self.alpha = float(alpha)
        self.layers = list(layers) if layers is not None else None
        self.gate = gate
        self.keep_norm = keep_norm
        self.name = name
        self.personalised = bool(self.per_user)

    def vector_for(self, user_id: str | None) -> SteeringVector | None:
        return self.per_user.get(user_id, self.default) if user_id is not None else self.default

    def prepare(self, lm: object, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch:
        model = lm.model  # type: ignore[attr-defined]
        depth, hidden = internals.num_layers(model), internals.hidden_size(model)
        chosen = [self.vector_for(r.user_id) for r in rows]
        for vec in {id(v): v for v in chosen if v is not None}.values():
            vec.check_fits(lm, allow_other_model=True)
        layers = self.layers
        if layers is None:
            layers = sorted({l for v in chosen if v is not None for l in v.layers})
        layers = internals.check_layers(layers, depth)
        alphas = torch.tensor([self.alpha if r.alpha is None else float(r.alpha) for r in rows])
        deltas = {}
        zero = torch.zeros(hidden)
        for layer in layers:
            stack = torch.stack([v.directions.get(layer, zero) if v is not None else zero for v in chosen])
            delta = (alphas[:, None] * stack)[:, None, :]
            deltas[layer] = delta.to(device=lm.device, dtype=lm.dtype)  # type: ignore[attr-defined]
        return _ActivationBatch(lm, list(conversations), deltas, self.gate, self.keep_norm)
