"""The methods a server offers: every registered method built with its default arguments over one
set of shared resources, or the reason it could not be; reloaded from the files as a whole."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from steer_away.errors import InputError
from steer_away.models import LanguageModel
from steer_away.scoring.base import ScorerError
from steer_away.scoring.registry import DEFAULT_BACKEND
from steer_away.steering.framework.method import SteeringMethod
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.registry import BASELINE, build_method, default_method, get_method, method_names
from steer_away.steering.vectors.bank import VectorBank
from steer_away.steering.vectors.vector import MissingVectorsError, SteeringVector, VectorFileError

log = logging.getLogger("steer_away.server")


def _merged(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with `changes` applied: a value replaces, None removes."""
    out = dict(current)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


class ServedMethods:
    """Every registered method built with its default arguments, or the reason it could not be."""

    def __init__(self, lm: LanguageModel, profiles: str | None, vectors: str | None, categories: str | None,
                 default_method: str | None) -> None:
        self.lm, self.profiles_path, self.vectors_path, self.categories_path = lm, profiles, vectors, categories
        self.requested_default = default_method
        self.methods: dict[str, SteeringMethod] = {}
        self.unavailable: dict[str, str] = {}
        self.default = BASELINE
        self.profiles: dict[str, Any] = {}
        self.categories: list[str] = []
        self.loaded_at = 0.0
        self.on_default: dict[str, int] = {}  # per method, how many profile users get its shared default
        self.learned: dict[str, Any] = {}  # users' profiles learned from feedback, laid over the file's
        self.learned_vectors: dict[str, dict[str, SteeringVector]] = {}  # bank kind -> user -> vector, likewise
        self._lock = threading.Lock()  # reloads and feedback updates rebuild methods one at a time
        self.reload()

    def reload(self) -> None:
        """Rebuild from the files; on any error the previous set stays in service.

        A damaged or mismatched file (a vector with NaN, one made for another model) fails the whole
        load, naming the file: at start the server refuses to run, on reload the previous set stays.
        A method whose inputs are simply absent (no such bank, no scorer installed) is unavailable,
        with the reason logged. A reload that would take away a method served now, or change the
        default, is refused: clients must not find their method gone because a file went bad."""
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        resources = SteeringResources(self.lm, profiles=self.profiles_path, vectors=self.vectors_path,
                                      categories=self.categories_path)
        file_profiles = resources.profiles()  # a broken profiles file fails the reload, not one method
        file_resources = resources
        resources = self._overlay(resources, file_profiles, self.learned, self.learned_vectors)
        profiles = resources.profiles()
        categories = sorted(resources.categories())
        methods: dict[str, SteeringMethod] = {}
        unavailable: dict[str, str] = {}
        for name in method_names():
            entry = get_method(name)
            if entry.needs_of(entry.args()).vector_bank is not None and self.vectors_path is None:
                unavailable[name] = "it needs vectors (start the server with --vectors)"
                continue
            try:
                methods[name] = build_method(name, None, resources)
            except VectorFileError as err:
                if not isinstance(err, MissingVectorsError):
                    raise InputError(f"method '{name}': {err}") from err
                unavailable[name] = str(err)
            except (OSError, ValueError, ScorerError) as err:  # a method's scorer missing: that method is out
                unavailable[name] = str(err)
        default = self.requested_default or (self.default if self.loaded_at and self.default in methods
                                              else self._automatic_default(methods))  # a reload keeps the default
        if default not in methods:
            raise InputError(f"default method '{default}' is not available: "
                             f"{unavailable.get(default, 'not a registered method')}")
        if self.loaded_at:
            lost = sorted(set(self.methods) - set(methods))
            if lost:
                raise InputError(f"the new files would take away method '{lost[0]}': {unavailable[lost[0]]}")
        on_default = {name: method.users_without_own(profiles) for name, method in methods.items()}
        for name, reason in unavailable.items():
            log.warning("method %s is not served: %s", name, reason)
        for name, users in on_default.items():
            if users:
                log.warning("method %s has no vector of their own for %d of %d users (e.g. %r); they get its "
                            "population vector", name, len(users), len(profiles), users[0])
        self.methods, self.unavailable, self.default = methods, unavailable, default
        self.profiles, self.categories, self.loaded_at = profiles, categories, time.time()
        self.file_profiles, self._file_resources = file_profiles, file_resources
        self.on_default = {name: len(users) for name, users in on_default.items() if users}

    def learn(self, profiles: Mapping[str, Any], vectors: Mapping[str, Mapping[str, SteeringVector | None]] | None = None
              ) -> None:
        """Users' profiles and vectors (bank kind -> user -> vector) learned from feedback, None: back to
        the files'. In force for each user's next request: the methods that read profiles or a changed
        bank are rebuilt over the new set and swapped in at once; a running request finishes with the
        method it started with."""
        with self._lock:
            learned = _merged(self.learned, profiles)
            learned_vectors = dict(self.learned_vectors)
            for kind, users in (vectors or {}).items():
                learned_vectors[kind] = _merged(learned_vectors.get(kind, {}), users)
            resources = self._overlay(self._file_resources, self.file_profiles, learned, learned_vectors)
            changed = set(vectors or {})
            rebuilt = {}
            for name in self.methods:
                needs = get_method(name).needs_of(get_method(name).args())
                if needs.profiles or needs.vector_bank in changed:
                    rebuilt[name] = build_method(name, None, resources)
            self.methods = {**self.methods, **rebuilt}
            self.profiles, self.learned, self.learned_vectors = resources.profiles(), learned, learned_vectors

    @staticmethod
    def _overlay(resources: SteeringResources, file_profiles: dict[str, Any], learned: dict[str, Any],
                 learned_vectors: dict[str, dict[str, SteeringVector]]) -> SteeringResources:
        """The files' resources with what users taught the server laid over them."""
        if learned:
            resources = resources.with_profiles({**file_profiles, **learned})
        for kind, users in learned_vectors.items():
            if users:
                bank = resources.vector_bank(kind)
                resources = resources.with_bank(kind, VectorBank(bank.default, {**bank.users, **users}))
        return resources

    def served_bank(self, kind: str) -> VectorBank | None:
        """The `kind` vector bank when a served method steers with it (what feedback can teach), else None."""
        for name in self.methods:
            if get_method(name).needs_of(get_method(name).args()).vector_bank == kind:
                return self._file_resources.vector_bank(kind)
        return None

    def scorer_name(self) -> str:
        """The scorer the served profiles' TOXICITY is on the scale of (feedback is scored with it)."""
        return self._file_resources.profiles_scored_by() or DEFAULT_BACKEND

    def _automatic_default(self, methods: dict[str, SteeringMethod]) -> str:
        """With vectors: the first method that steers each user with their own vector; else the baseline."""
        return default_method(self.vectors_path is not None, methods)

    def availability(self) -> dict[str, str | None]:
        return {name: (None if name in self.methods else self.unavailable.get(name, "not built"))
                for name in method_names()}
