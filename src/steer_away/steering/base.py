"""The interface every steering method implements, so generation and evaluation never ask which.

A method turns a batch of conversations into a :class:`PreparedBatch`: the branches to run (one
for activation steering, three for expert / anti-expert logit steering), a scope that installs and
always removes whatever hooks the method needs, and a rule that combines the branches' next-token
logits into one row per conversation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

Message = dict[str, str]
Conversation = list[Message]


@dataclass(frozen=True)
class RowSteering:
    """Who a row is for, and optional overrides of the method's strength and (logit steering) category."""

    user_id: str | None = None
    alpha: float | None = None
    category: str | None = None


class PreparedBatch:
    """Branches, hook scope and logit rule for one batch; the default is the unsteered model."""

    def __init__(self, branches: list[list[Conversation]]) -> None:
        self.branches = branches

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    def scope(self) -> AbstractContextManager[object]:
        return nullcontext()

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """(branches, batch, vocab) next-token logits -> (batch, vocab) scores to decode from."""
        return logits[0]


class SteeringMethod(ABC):
    """A way of steering a frozen model; `name` labels results, never selects code paths."""

    name: str = "method"
    personalised: bool = False  # False: every row is steered alike, so one answer per prompt serves all users

    @abstractmethod
    def prepare(self, lm: object, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch: ...


class Unsteered(SteeringMethod):
    name = "unsteered"

    def prepare(self, lm: object, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch:
        return PreparedBatch([list(conversations)])
