"""What method builders draw on, and what a method says it needs.

`SteeringResources` holds the model and, loaded on first use and then shared by every method built
from it, the user profiles, vector banks, steering categories and toxicity scorers, so a method that
does not need vectors never asks for them. `Needs` is what a method asks to have prepared (a sweep prepares
exactly that). Methods read both from here; only the registry reads the methods.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from steer_away.errors import InputError
from steer_away.models import LanguageModel
from steer_away.profiles import UserProfile, load_profiles, profiles_scorer
from steer_away.scoring import make_scorer
from steer_away.scoring.base import ToxicityScorer
from steer_away.scoring.registry import DEFAULT_BACKEND
from steer_away.steering.framework.categories import SteeringCategory, load_categories
from steer_away.steering.vectors.bank import VectorBank, load_vector_bank
from steer_away.steering.vectors.kinds import bank_kind


@dataclass(frozen=True)
class Needs:
    """What a method needs prepared before it can be built (a sweep prepares exactly this)."""

    vector_bank: str | None = None  # which bank of the vector store: a kind in vectors/kinds.py: BANK_KINDS
    profiles: bool = False  # per-user sensitivity profiles
    categories: bool = False  # the steering-category file
    scorer: bool = False  # a toxicity scorer (the run's, unless the method's arguments name another)

    def __post_init__(self) -> None:
        if self.vector_bank is not None:
            bank_kind(self.vector_bank)


class SteeringResources:
    """What builders draw on, loaded on first use and then shared by every method built from it."""

    def __init__(self, lm: LanguageModel, *, profiles: str | Path | Mapping[str, UserProfile] | None = None,
                 vectors: str | Path | None = None, categories: str | Path | None = None,
                 allow_other_model: bool = False, scorer: str | ToxicityScorer | None = None) -> None:
        self.lm = lm
        self.allow_other_model = allow_other_model  # vectors extracted under another model id (same shape)
        self._profiles_source = profiles
        self._vectors = Path(vectors) if vectors is not None else None
        self._categories_path = categories
        self._loaded_profiles: dict[str, UserProfile] | None = None
        self._loaded_categories: dict[str, SteeringCategory] | None = None
        self._banks: dict[str, VectorBank] = {}
        self._scorer = scorer  # None: the one the profiles file records, else the default backend
        self._scorers: dict[str, ToxicityScorer] = {}
        self._scored_by: str | None = None  # the original file's scorer, for profiles swapped in by with_profiles

    def with_profiles(self, profiles: Mapping[str, UserProfile]) -> SteeringResources:
        """The same resources with other profiles (a server's, updated by its users' feedback): what is
        loaded (vector banks, categories, scorers) is shared, and the profiles keep the scale of the
        scorer the originals were scored by."""
        other = copy.copy(self)
        other._scored_by = self.profiles_scored_by()
        other._profiles_source = profiles
        other._loaded_profiles = dict(profiles)
        return other

    def with_bank(self, kind: str, bank: VectorBank) -> SteeringResources:
        """The same resources with another `kind` bank (users' vectors learned from feedback)."""
        other = copy.copy(self)
        other._banks = {**self._banks, kind: bank}
        return other

    def profiles(self) -> dict[str, UserProfile]:
        if self._loaded_profiles is None:
            source = self._profiles_source
            if source is None:
                self._loaded_profiles = {}
            elif isinstance(source, Mapping):
                self._loaded_profiles = dict(source)
            else:
                self._loaded_profiles = load_profiles(source)
        return self._loaded_profiles

    def categories(self) -> dict[str, SteeringCategory]:
        if self._loaded_categories is None:
            self._loaded_categories = load_categories(self._categories_path)
        return self._loaded_categories

    def vector_bank(self, kind: str) -> VectorBank:
        bank_kind(kind)
        if self._vectors is None:
            raise InputError(f"the '{kind}' vectors are needed but no vectors were given (--vector / --vectors)")
        if kind not in self._banks:
            self._banks[kind] = load_vector_bank(self._vectors, kind, self.lm, allow_other_model=self.allow_other_model)
        return self._banks[kind]

    def profiles_scored_by(self) -> str | None:
        """The scorer (with its revision) the profiles file records; None for profiles given as objects."""
        source = self._profiles_source
        return profiles_scorer(source) if isinstance(source, (str, Path)) else self._scored_by

    def scorer(self, name: str = "") -> ToxicityScorer:
        """The scorer named (built once, behind the user's score cache), or with "" the run's own: the
        one given, else the one the profiles were scored by (their targets are on its scale)."""
        if not name and isinstance(self._scorer, ToxicityScorer):
            return self._scorer
        key = name or (self._scorer if isinstance(self._scorer, str) else None) or self.profiles_scored_by() \
            or DEFAULT_BACKEND
        if key not in self._scorers:
            self._scorers[key] = make_scorer(key)
        return self._scorers[key]
