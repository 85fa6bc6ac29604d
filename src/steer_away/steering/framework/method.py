"""The interface every steering method implements, so generation and evaluation never ask which.

A method turns a batch of conversations into a :class:`PreparedBatch`: the branches to run (one
for activation steering, three for expert / anti-expert logit steering), a scope that installs and
always removes whatever hooks the method needs, and a rule that combines the branches' next-token
logits into one row per conversation. Its arguments are a :class:`MethodArgs` dataclass, so that
configs, the command line and the server can all build it, and a sweep can name a result by them.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from steer_away import internals
from steer_away.chat import Conversation
from steer_away.steering.framework.arguments import RowOverrideError, RowOverrides

if TYPE_CHECKING:
    from steer_away.models import LanguageModel


@dataclass(frozen=True)
class RowSteering:
    """Who a row is for, and optional overrides of the method's strength and of its own per-row choices."""

    user_id: str | None = None
    alpha: float | None = None
    overrides: RowOverrides | None = None  # of the type the row's method declares (`SteeringMethod.row_overrides`)


@dataclass(frozen=True)
class ResidualEdits:
    """What a batch does to the residual stream, as data: the decode loop stacks many requests'
    edits into one tensor per layer, so requests of different methods can share a forward pass."""

    deltas: dict[int, torch.Tensor]  # layer -> (rows, 1, hidden), α·v per row (branch-major, as `branches`)
    intervention: Callable[[torch.Tensor], Callable[[torch.Tensor], None]]  # see interventions.py
    gate: Callable[[int], bool] | None = None  # which of a request's own steps (0: prefill) are edited; None: all


@dataclass(frozen=True)
class Capabilities:
    """What a method's decoding does beyond passing the model's logits through, declared as data (the
    decoder and every scoring path read these, never which methods a class overrides).

    `combines`: `PreparedBatch.combine` turns the branches into scores (else they are branch 0's logits);
    `rescores`: `PreparedBatch.rescore` re-weights the scores by the answer so far (it must be handed it);
    `chooses_answers`: the method answers by choosing among whole sampled answers (`answer_choice`).
    """

    combines: bool = False
    rescores: bool = False
    chooses_answers: bool = False


class PreparedBatch:
    """Branches, residual edits and logit rule for one batch; the default is the unsteered model. A
    subclass that overrides `combine` or `rescore` says so in `capabilities`."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A rule written but not declared would never run: refuse the class (declare it in `capabilities`)."""
        super().__init_subclass__(**kwargs)
        for rule, flag in (("combine", "combines"), ("rescore", "rescores")):
            if getattr(cls, rule) is not getattr(PreparedBatch, rule) and not getattr(cls.capabilities, flag):
                raise TypeError(f"{cls.__name__} has its own {rule}() but does not declare it: set "
                                f"capabilities = Capabilities({flag}=True)")

    def __init__(self, branches: list[list[Conversation]],
                 prefixes: list[list[Conversation | None]] | None = None,
                 edits: ResidualEdits | None = None) -> None:
        self.branches = branches
        self.edits = edits
        # Per branch and row, the leading messages (system prompt, example exchanges) that many rows
        # share and that do not depend on the steering: their keys and values are computed once and
        # reused (decoding/kv_cache.py), and a decode step reads them once (internals/shared_prefix.py).
        # None: nothing to share.
        self.prefixes = prefixes

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    @property
    def passes_logits_through(self) -> bool:
        """True when the single branch's logits are the scores, so a decoder may pick straight from the
        forward pass (one argmax over many requests)."""
        return self.num_branches == 1 and not self.capabilities.combines and not self.capabilities.rescores

    def scope(self, model: object) -> AbstractContextManager[object]:
        """The edits installed as hooks on `model` for a caller's own forward passes over this batch
        alone (the decoder and the scoring paths pass them as data instead). Removed on exit, on error too."""
        if self.edits is None:
            return nullcontext()

        return internals.residual_hooks(model, {layer: self.edits.intervention(delta)
                                                for layer, delta in self.edits.deltas.items()})

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """(branches, batch, vocab) next-token logits -> (batch, vocab) scores to decode from."""
        return logits[0]

    def rescore(self, scores: torch.Tensor, answers: Sequence[Sequence[int]]) -> torch.Tensor:
        """(batch, vocab) combined scores, re-weighted by what each row's answer so far (its token ids,
        `answers[i]`) would become with each next token. The default leaves them as they are."""
        return scores


class AnswerChoice(ABC):
    """How a method answers by sampling several whole answers and keeping one of them: the decode
    engine draws `samples` answers per request from `sampler` at `temperature` (ordinary requests of
    the running batch), then asks `choose` which to return. A choice that weighs how well each
    answer addresses the request says so (`wants_relevance`); the engine then scores each answer's
    relevance with the unsteered model."""

    samples: int
    temperature: float
    sampler: SteeringMethod
    seed: int  # draws of a request that brings no generator of its own are seeded from this and the request
    wants_relevance: bool = False

    @abstractmethod
    def choose(self, row: RowSteering, texts: Sequence[str], logliks: Sequence[float],
               relevance: Sequence[float] | None = None) -> int:
        """The index of the answer to return; `logliks` are each answer's log-likelihood under `sampler`,
        `relevance` each one's relevance to the request (nats per token; given when asked for)."""


class SteeringMethod(ABC):
    """A way of steering a frozen model; `name` labels results, never selects code paths, and
    `capabilities` says what its decoding does (those of the batches it prepares, and whether it
    chooses among whole answers)."""

    name: str = "method"
    capabilities: Capabilities = Capabilities()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """An answer choice written but not declared would never be made: refuse the class."""
        super().__init_subclass__(**kwargs)
        if cls.answer_choice is not SteeringMethod.answer_choice and not cls.capabilities.chooses_answers:
            raise TypeError(f"{cls.__name__} has its own answer_choice() but does not declare it: set "
                            f"capabilities = Capabilities(chooses_answers=True)")
    personalised: bool = False  # False: every row is steered alike, so one answer per prompt serves all users
    row_overrides: type[RowOverrides] | None = None  # the per-row choices it takes beyond user and α

    def answer_choice(self) -> AnswerChoice | None:
        """How a method with `capabilities.chooses_answers` picks among whole sampled answers (the
        decoder then fans each request out); None for a method that steers token by token."""
        return None

    @abstractmethod
    def prepare(self, lm: LanguageModel, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch: ...

    def users_without_own(self, users: Iterable[str]) -> list[str]:
        """Of `users`, those a personalised method has no steering of their own for, and serves its
        shared default instead (said out loud by the server and sweeps); none by default."""
        return []

    def answer_group(self, row: RowSteering) -> Hashable:
        """Rows with equal groups are steered identically, so one answer to a prompt serves them all
        (an evaluation answers each prompt once per group). The default is safe for any method: one
        group per user when it is personalised, one for everyone when not; methods that know better
        (one vector shared by users without their own, one category per group) say so."""
        return (row.user_id if self.personalised else None, row.alpha, row.overrides)

    def read_overrides(self, raw: Mapping[str, object]) -> RowOverrides | None:
        """This method's per-row overrides from `raw` (a request's keys beyond user and α), checked
        once here; a bad one, or a key this method does not take, raises RowOverrideError (an
        argument that would be ignored must not look applied)."""
        taken = {f.name for f in dataclasses.fields(self.row_overrides)} if self.row_overrides is not None else set()
        unknown = sorted(set(raw) - taken)
        if unknown:
            takes = ", ".join(sorted(taken)) or "nothing beyond method and alpha"
            raise RowOverrideError(unknown[0], f"{unknown[0]!r} is not an argument method '{self.name}' takes per row "
                                               f"(it takes: {takes})")
        if self.row_overrides is None:
            return None
        overrides = self.row_overrides.from_mapping(raw)
        self.check_overrides(overrides)
        return overrides

    def check_overrides(self, overrides: RowOverrides) -> None:
        """Raise RowOverrideError for an override this method cannot use (by default: any typed value goes)."""
        return None


class Unsteered(SteeringMethod):
    name = "unsteered"

    def prepare(self, lm: LanguageModel, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch:
        return PreparedBatch([list(conversations)])


