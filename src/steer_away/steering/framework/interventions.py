"""Interventions: what a steering method does to one layer's residual stream, as a value.

An intervention takes the per-row edit tensor prepared once per batch, `delta` of shape
(batch, 1, hidden) = α·v for each row, and returns the in-place edit the layer hook runs at every
forward pass. Edits must not allocate more than they need: they run on every layer of every step.
Rows whose delta is zero are left exactly as they were by every intervention here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from steer_away.errors import InputError

Edit = Callable[[torch.Tensor], None]
Intervention = Callable[[torch.Tensor], Edit]


def add(delta: torch.Tensor) -> Edit:
    """CAA as published: h ← h + α·v."""

    def edit(hidden: torch.Tensor) -> None:
        hidden.add_(delta)

    return edit


def add_keep_norm(delta: torch.Tensor) -> Edit:
    """h ← (h + α·v)·‖h‖/‖h + α·v‖: the direction moves, the residual norm stays, which keeps later
    layer norms in the range they were trained on at strengths where plain addition breaks text."""

    def edit(hidden: torch.Tensor) -> None:
        before = hidden.norm(dim=-1, keepdim=True)
        hidden.add_(delta)
        hidden.mul_(before / hidden.norm(dim=-1, keepdim=True).clamp(min=1e-6))

    return edit


def ablate(delta: torch.Tensor) -> Edit:
    """Directional ablation: h ← h − (h·v̂)v̂, removing the component along v (α only picks which rows
    take part: any non-zero α ablates). For "never move toward v" rather than "move away from v"."""
    norms = delta.norm(dim=-1, keepdim=True)
    unit = torch.where(norms > 0, delta / norms.clamp(min=1e-12), torch.zeros_like(delta))

    def edit(hidden: torch.Tensor) -> None:
        hidden.sub_((hidden * unit).sum(-1, keepdim=True) * unit)

    return edit


INTERVENTIONS: dict[str, Intervention] = {"add": add, "add-keep-norm": add_keep_norm, "ablate": ablate}


def intervention_named(name: str) -> Intervention:
    try:
        return INTERVENTIONS[name]
    except KeyError:
        raise InputError(f"unknown intervention {name!r}; choose one of {', '.join(INTERVENTIONS)}") from None
