"""Contrastive activation addition at generation time: edit the residual stream with α·v_l.

Every row of a batch can carry its own user's vector and α: the per-layer edits are stacked once
per batch into a (batch, 1, hidden) tensor, so the hook is a single in-place operation per layer
and step, with no allocation and no Python loop over rows. What the edit does with that tensor
(add it, add it keeping the norm, ablate along it) is an intervention value, see interventions.py.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from steer_away import internals
from steer_away.chat import Conversation
from steer_away.errors import InputError
from steer_away.steering.framework.arguments import MethodArgs, Strength
from steer_away.steering.framework.interventions import Intervention, add, intervention_named
from steer_away.steering.framework.method import PreparedBatch, ResidualEdits, RowSteering, SteeringMethod
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.vectors.kinds import bank_kind
from steer_away.steering.vectors.layers import SEED_SPEC, parse_layer_spec
from steer_away.steering.vectors.vector import MissingVectorsError, SteeringVector

if TYPE_CHECKING:
    from steer_away.models import LanguageModel

Gate = str | int  # "all", "prefill", or K: steer the prefill and the first K-1 decode steps
SCALES = ("raw", "relative")
CAA_STRENGTH = Strength("alpha")  # α: the multiple of the vector (or of the residual norm, scale=relative)


def parse_gate(gate: Gate) -> Gate:
    """'all', 'prefill' or a positive token count (also given as a digit string)."""
    if isinstance(gate, str) and gate.strip().isdigit():
        gate = int(gate)
    if gate in ("all", "prefill") or (isinstance(gate, int) and not isinstance(gate, bool) and gate >= 1):
        return gate
    raise InputError(f"gate must be 'all', 'prefill' or a positive number of tokens, got {gate!r}")


def gate_function(gate: Gate) -> Callable[[int], bool] | None:
    gate = parse_gate(gate)
    if gate == "all":
        return None
    if gate == "prefill":
        return lambda step: step == 0
    limit = int(gate)
    return lambda step: step < limit


class ActivationSteering(SteeringMethod):
    """CAA with one vector for everyone, or one per user (unknown users get `default`)."""

    def __init__(
        self,
        vectors: SteeringVector | Mapping[str, SteeringVector],
        alpha: float,
        *,
        layers: Sequence[int] | None = None,
        gate: Gate = "all",
        intervention: Intervention = add,
        scale: str = "raw",
        default: SteeringVector | None = None,
        name: str = "caa",
    ) -> None:
        self.gate = parse_gate(gate)
        if scale not in SCALES:
            raise InputError(f"scale must be one of {SCALES}, got {scale!r}")
        CAA_STRENGTH.check(alpha)
        self.per_user = dict(vectors) if isinstance(vectors, Mapping) else {}
        self.default = default if isinstance(vectors, Mapping) else vectors
        if scale == "relative":
            self.per_user = {u: v.relative() for u, v in self.per_user.items()}
            self.default = self.default.relative() if self.default is not None else None
        self.alpha = float(alpha)
        self.layers = list(layers) if layers is not None else None
        self.intervention = intervention
        self.name = name
        self.personalised = bool(self.per_user)

    def answer_group(self, row: RowSteering) -> Hashable:
        """Users with their own vector are steered each their own way; everyone else shares the default."""
        user = row.user_id if row.user_id in self.per_user else None
        return (user, row.alpha, row.overrides)

    def users_without_own(self, users: Iterable[str]) -> list[str]:
        """Of `users`, those without a vector of their own: they are steered with the default."""
        return [user for user in users if user not in self.per_user] if self.personalised else []

    def vector_for(self, user_id: str | None) -> SteeringVector | None:
        return self.per_user.get(user_id, self.default) if user_id is not None else self.default

    def prepare(self, lm: LanguageModel, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch:
        model = lm.model
        depth, hidden = internals.num_layers(model), internals.hidden_size(model)
        chosen = [self.vector_for(r.user_id) for r in rows]
        for vec in {id(v): v for v in chosen if v is not None}.values():
            vec.check_fits(lm, allow_other_model=True)
        layers = self.layers
        if layers is None:
            layers = sorted({l for v in chosen if v is not None for l in v.layers})
        layers = internals.check_layers(layers, depth)
        for row in rows:
            CAA_STRENGTH.check(row.alpha)
        alphas = torch.tensor([self.alpha if r.alpha is None else float(r.alpha) for r in rows])
        deltas = {}
        zero = torch.zeros(hidden)
        for layer in layers:
            stack = torch.stack([v.directions.get(layer, zero) if v is not None else zero for v in chosen])
            delta = (alphas[:, None] * stack)[:, None, :]
            deltas[layer] = delta.to(device=lm.device, dtype=lm.dtype)
        return PreparedBatch([list(conversations)], edits=ResidualEdits(deltas, self.intervention,
                                                                         gate_function(self.gate)))


# --- registry glue: the arguments CAA takes and how it is built from shared resources ----------


@dataclass(frozen=True)
class CAAArgs(MethodArgs):
    """Arguments of every CAA method; the vector bank (population, dislike, bt) is the method's."""

    strength: ClassVar[Strength | None] = CAA_STRENGTH
    alpha: float = field(default=0.5, metadata={
        "help": "strength: multiple of the vector (or of the residual norm with scale=relative)"})
    layers: str | None = field(default=None, metadata={
        "help": "'14-20', '3,5' or 'seed' (the CAA study's 16-22 of 32 mapped by depth); default: the vector's"})
    gate: str = field(default="all", metadata={"help": "'all', 'prefill', or K: steer the first K tokens"})
    intervention: str = field(default="add", metadata={"help": "add, add-keep-norm or ablate"})
    scale: str = field(default="raw", metadata={"help": "raw, or relative: α as a fraction of the residual norm"})

    def validate(self) -> None:
        parse_gate(self.gate)
        intervention_named(self.intervention)
        if self.scale not in SCALES:
            raise InputError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.layers is not None:
            parse_layer_spec(self.layers, None)  # syntax here; the depth is checked when built

    def extraction_layers(self) -> str:
        return self.layers or SEED_SPEC


def caa_builder(kind: str) -> Callable[[Any, SteeringResources, str], SteeringMethod]:
    """How a CAA method with vectors from the `kind` bank is built from its arguments and the resources."""
    per_user = bank_kind(kind).per_user

    def build(args: CAAArgs, resources: SteeringResources, name: str) -> SteeringMethod:
        bank = resources.vector_bank(kind)
        layers = None
        if args.layers is not None:
            layers = parse_layer_spec(args.layers, internals.num_layers(resources.lm.model))
        vectors: SteeringVector | Mapping[str, SteeringVector]
        if per_user and not bank.users:  # a personal method must not serve the population vector under its name
            raise MissingVectorsError(f"{name}: the '{kind}' bank holds no per-user vectors")
        if not per_user:
            if bank.default is None:
                raise MissingVectorsError(f"{name}: the vector bank has no population vector")
            vectors = bank.default
        else:
            vectors = bank.users
        return ActivationSteering(vectors, args.alpha, layers=layers, gate=args.gate,
                                  intervention=intervention_named(args.intervention), scale=args.scale,
                                  default=bank.default, name=name)

    return build
