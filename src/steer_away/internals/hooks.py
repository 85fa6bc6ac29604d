"""Residual-stream hooks: edit or record a decoder layer's output inside a scope that removes itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from steer_away.internals.architecture import Model, check_layers, decoder_layers

Edit = Callable[[torch.Tensor], None]  # runs in place on a layer's residual output (batch, seq, hidden)


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


