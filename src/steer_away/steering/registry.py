"""The one list of steering methods: their names, arguments, default strengths and what they need.

Everything that offers a choice of method (sweep configs, the command line, the server, reports)
reads it from here, so a new method is one file (its `SteeringMethod`, its `MethodArgs` and a
builder) plus one `register(...)` line, and no other module names it.

A builder gets the method's validated arguments and the shared :class:`SteeringResources`
(resources.py: model, user profiles, vector banks, steering categories), loaded lazily so that a
method that does not need vectors never asks for them. Methods import the resources, never this
module; this module imports the methods.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from steer_away.errors import InputError
from steer_away.steering.framework.arguments import MethodArgs, Strength
from steer_away.steering.framework.method import SteeringMethod, Unsteered
from steer_away.steering.framework.resources import Needs, SteeringResources
from steer_away.steering.methods.activation import CAAArgs, caa_builder
from steer_away.steering.methods.guided import GuidedArgs, guided_builder
from steer_away.steering.methods.logits import ACD, EADS, LogitArgs, logit_builder
from steer_away.steering.methods.prompting import PromptArgs, prompt_builder
from steer_away.steering.methods.rerank import RerankArgs, rerank_builder
from steer_away.steering.vectors.kinds import BT, DISLIKE, POPULATION


class UnknownMethodError(InputError):
    """A method name that is not registered."""


@dataclass(frozen=True)
class MethodEntry:
    name: str
    summary: str
    args: type[MethodArgs]
    build: Callable[[Any, SteeringResources, str], SteeringMethod]
    needs: Needs = field(default_factory=Needs)

    @property
    def default_strength(self) -> float | None:
        return self.args().strength_value()

    def make_args(self, raw: Mapping[str, object] | None = None, where: str | None = None) -> MethodArgs:
        return self.args.from_mapping(raw or {}, where or f"method '{self.name}'")

    def needs_of(self, args: MethodArgs) -> Needs:
        """What this method needs with these arguments: its own needs and those of a method it wraps."""
        inner = args.wrapped()
        if inner is None:
            return self.needs
        theirs = get_method(inner).needs_of(get_method(inner).args())
        return Needs(vector_bank=self.needs.vector_bank or theirs.vector_bank,
                     **{k: getattr(self.needs, k) or getattr(theirs, k) for k in ("profiles", "categories", "scorer")})

    def strength_of(self, args: MethodArgs) -> Strength | None:
        """The strength a row's α sets: its own, else that of the method it wraps (None: α changes nothing)."""
        inner = args.wrapped()
        if args.strength is not None or inner is None:
            return args.strength
        return get_method(inner).strength_of(get_method(inner).args())

    def extraction_layers(self, args: MethodArgs) -> str | None:
        """The layer spec its vectors (or those of the method it wraps) are extracted at."""
        inner = args.wrapped()
        own = args.extraction_layers()
        return own if own is not None or inner is None else get_method(inner).args().extraction_layers()

    def label(self, args: MethodArgs) -> str:
        """'caa-dislike α=0.5 layers=14-20': the name, α, and every argument that is not its default."""
        described = args.describe()
        return f"{self.name} {described}" if described else self.name


_REGISTRY: dict[str, MethodEntry] = {}


def register(entry: MethodEntry) -> MethodEntry:
    if entry.name in _REGISTRY:
        raise InputError(f"a method named '{entry.name}' is already registered")
    try:
        entry.args()
    except TypeError as err:
        raise TypeError(f"{entry.name}: every MethodArgs field needs a default ({err})") from err
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def method_names() -> list[str]:
    return list(_REGISTRY)


def get_method(name: str) -> MethodEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownMethodError(f"unknown steering method '{name}' (have: {', '.join(_REGISTRY)}){hint}") from None


def default_method(with_vectors: bool, built: Mapping[str, SteeringMethod] | None = None) -> str:
    """The method used when none is named (by `generate` and the server alike).

    Without vectors: the baseline. With vectors: among the methods that read them, in registry
    order, the first built one that steers each user with their own vector, else the first one;
    `built` holds the methods already built (the server builds every one its files allow; None:
    none is built yet, every registered method counts). The baseline if no such method is there.
    """
    if not with_vectors:
        return BASELINE
    candidates = list(built) if built is not None else list(_REGISTRY)
    readers = [name for name in candidates if get_method(name).needs.vector_bank is not None]
    personal = [name for name in readers if built is not None and built[name].personalised]
    return (personal or readers or [BASELINE])[0]


def build_method(name: str, args: MethodArgs | Mapping[str, object] | None,
                 resources: SteeringResources) -> SteeringMethod:
    entry = get_method(name)
    if not isinstance(args, MethodArgs):
        args = entry.make_args(args)
    elif not isinstance(args, entry.args):
        raise TypeError(f"{name} takes {entry.args.__name__}, got {type(args).__name__}")
    return entry.build(args, resources, name)


BASELINE = "unsteered"  # what every steered result is compared against
POPULATION_REFERENCE = "caa-population"  # the one-vector-for-everyone method personalised ones must beat


def _unsteered(_args: MethodArgs, _resources: SteeringResources, _name: str) -> SteeringMethod:
    return Unsteered()


@dataclass(frozen=True)
class NoArgs(MethodArgs):
    """A method without arguments."""


register(MethodEntry(BASELINE, "the frozen model as it is (the baseline)", NoArgs, _unsteered))
register(MethodEntry(POPULATION_REFERENCE, "CAA with the population mean-difference vector for everyone",
                     CAAArgs, caa_builder(POPULATION), Needs(vector_bank=POPULATION)))
register(MethodEntry("caa-dislike", "CAA with each user's dislike-weighted vector", CAAArgs,
                     caa_builder(DISLIKE), Needs(vector_bank=DISLIKE, profiles=True)))
register(MethodEntry("caa-bt", "CAA with each user's Bradley–Terry ideal-point vector", CAAArgs,
                     caa_builder(BT), Needs(vector_bank=BT, profiles=True)))
register(MethodEntry("eads", "expert − anti-expert logit steering, category by user sensitivity", LogitArgs,
                     logit_builder(EADS), Needs(profiles=True, categories=True)))
register(MethodEntry("acd", "anti-expert contrastive decoding with a plausibility cut-off", LogitArgs,
                     logit_builder(ACD), Needs(profiles=True, categories=True)))
register(MethodEntry("rerank", "best of n sampled answers: the one nearest the user's preferred TOXICITY",
                     RerankArgs, rerank_builder(build_method), Needs(profiles=True, scorer=True)))
register(MethodEntry("guided", "classifier-guided decoding: top-k tokens re-weighted toward the user's TOXICITY",
                     GuidedArgs, guided_builder(), Needs(profiles=True, scorer=True)))
register(MethodEntry("profile-prompt", "the user's tolerance as a system prompt, with URIAL-style examples",
                     PromptArgs, prompt_builder(), Needs(profiles=True, categories=True)))
