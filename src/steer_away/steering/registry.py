"""The one list of steering methods: their names, arguments, default strengths and what they need.

Everything that offers a choice of method (sweep configs, the command line, the server, reports)
reads it from here, so a new method is one file (its `SteeringMethod`, its `MethodArgs` and a
builder) plus one `register(...)` line, and no other module names it.

A builder gets the method's validated arguments and the shared :class:`SteeringResources`
(model, user profiles, vector banks, steering categories), loaded lazily so that a method that
does not need vectors never asks for them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steer_away.steering.activation import CAAArgs, caa_builder
from steer_away.steering.base import MethodArgs, SteeringMethod, Unsteered
from steer_away.steering.logits import ACD, EADS, LogitArgs, SteeringCategory, load_categories, logit_builder

if TYPE_CHECKING:
    from steer_away.models import LanguageModel
    from steer_away.profiles import UserProfile
    from steer_away.steering.bank import VectorBank


class UnknownMethodError(ValueError):
    """A method name that is not registered."""


@dataclass(frozen=True)
class Needs:
    """What a method needs prepared before it can be built (a sweep prepares exactly this)."""

    vector_bank: str | None = None  # which bank of the vector store: population, dislike, bt
    profiles: bool = False  # per-user sensitivity profiles
    categories: bool = False  # the steering-category file


@dataclass(frozen=True)
class MethodEntry:
    name: str
    summary: str
    args: type[MethodArgs]
    build: Callable[[Any, SteeringResources, str], SteeringMethod]
    needs: Needs = field(default_factory=Needs)

    @property
    def default_alpha(self) -> float | None:
        return getattr(self.args(), "alpha", None)

    def make_args(self, raw: Mapping[str, object] | None = None, where: str | None = None) -> MethodArgs:
        return self.args.from_mapping(raw or {}, where or f"method '{self.name}'")

    def label(self, args: MethodArgs) -> str:
        """'caa-dislike α=0.5 layers=14-20': the name, α, and every argument that is not its default."""
        parts = [self.name]
        values = args.identity()
        if "alpha" in values:
            alpha = values["alpha"]
            parts.append("α=" + ("category" if alpha is None else f"{alpha:g}"))
        parts += [f"{k}={v}" for k, v in args.changed().items() if k != "alpha"]
        return " ".join(parts)


_REGISTRY: dict[str, MethodEntry] = {}


def register(entry: MethodEntry) -> MethodEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"a method named '{entry.name}' is already registered")
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


def default_method(with_vectors: bool) -> str:
    """The method used when none is named: with vectors at hand, the first registered method that
    reads them; otherwise the baseline."""
    if with_vectors:
        for entry in _REGISTRY.values():
            if entry.needs.vector_bank is not None:
                return entry.name
    return BASELINE


def build_method(name: str, args: MethodArgs | Mapping[str, object] | None,
                 resources: SteeringResources) -> SteeringMethod:
    entry = get_method(name)
    if not isinstance(args, MethodArgs):
        args = entry.make_args(args)
    elif not isinstance(args, entry.args):
        raise TypeError(f"{name} takes {entry.args.__name__}, got {type(args).__name__}")
    return entry.build(args, resources, name)


class SteeringResources:
    """What builders draw on, loaded on first use and then shared by every method built from it."""

    def __init__(self, lm: LanguageModel, *, profiles: str | Path | Mapping[str, UserProfile] | None = None,
                 vectors: str | Path | None = None, categories: str | Path | None = None,
                 allow_other_model: bool = False) -> None:
        self.lm = lm
        self.allow_other_model = allow_other_model  # vectors extracted under another model id (same shape)
        self._profiles_source = profiles
        self._vectors = Path(vectors) if vectors is not None else None
        self._categories_path = categories
        self._loaded_profiles: dict[str, UserProfile] | None = None
        self._loaded_categories: dict[str, SteeringCategory] | None = None
        self._banks: dict[str, VectorBank] = {}

    def profiles(self) -> dict[str, UserProfile]:
        if self._loaded_profiles is None:
            source = self._profiles_source
            if source is None:
                self._loaded_profiles = {}
            elif isinstance(source, Mapping):
                self._loaded_profiles = dict(source)
            else:
                from steer_away.profiles import load_profiles

                self._loaded_profiles = load_profiles(source)
        return self._loaded_profiles

    def categories(self) -> dict[str, SteeringCategory]:
        if self._loaded_categories is None:
            self._loaded_categories = load_categories(self._categories_path)
        return self._loaded_categories

    def vector_bank(self, kind: str) -> VectorBank:
        from steer_away.steering.bank import load_vector_bank

        if self._vectors is None:
            raise ValueError(f"the '{kind}' vectors are needed but no vectors were given (--vector / --vectors)")
        if kind not in self._banks:
            self._banks[kind] = load_vector_bank(self._vectors, kind, self.lm, allow_other_model=self.allow_other_model)
        return self._banks[kind]


BASELINE = "unsteered"  # what every steered result is compared against


def _unsteered(_args: MethodArgs, _resources: SteeringResources, _name: str) -> SteeringMethod:
    return Unsteered()


@dataclass(frozen=True)
class NoArgs(MethodArgs):
    """A method without arguments."""


register(MethodEntry(BASELINE, "the frozen model as it is (the baseline)", NoArgs, _unsteered))
register(MethodEntry("caa-population", "CAA with the population mean-difference vector for everyone",
                     CAAArgs, caa_builder("population"), Needs(vector_bank="population")))
register(MethodEntry("caa-dislike", "CAA with each user's dislike-weighted vector", CAAArgs,
                     caa_builder("dislike"), Needs(vector_bank="dislike", profiles=True)))
register(MethodEntry("caa-bt", "CAA with each user's Bradley–Terry ideal-point vector", CAAArgs,
                     caa_builder("bt"), Needs(vector_bank="bt", profiles=True)))
register(MethodEntry("eads", "expert − anti-expert logit steering, category by user sensitivity", LogitArgs,
                     logit_builder(EADS), Needs(profiles=True, categories=True)))
register(MethodEntry("acd", "anti-expert contrastive decoding with a plausibility cut-off", LogitArgs,
                     logit_builder(ACD), Needs(profiles=True, categories=True)))
