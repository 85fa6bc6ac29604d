"""Building a scorer from its name, always behind the SQLite cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steer_away.paths import cache_root
from steer_away.scoring.base import ScorerError, ToxicityScorer
from steer_away.scoring.cache import CachedScorer, ScoreCache
from steer_away.scoring.detoxify_backend import DetoxifyScorer
from steer_away.scoring.hf_classifier import HF_PREFIX, HFClassifierScorer
from steer_away.scoring.jigsaw import JigsawBiLSTMScorer
from steer_away.scoring.perspective import PerspectiveScorer

BACKENDS = ("jigsaw-bilstm", "detoxify", "perspective", f"{HF_PREFIX}<hub id or local folder>")
DEFAULT_BACKEND = "jigsaw-bilstm"


def check_scorer_name(name: str) -> None:
    """Refuse a name no backend answers to (before a long run needs the scorer, not in the middle of it)."""
    if name not in ("jigsaw-bilstm", "offline", "detoxify", "perspective") and not name.startswith(HF_PREFIX):
        raise ScorerError(f"unknown scorer '{name}'; choose one of {', '.join(BACKENDS)}")


def make_scorer(name: str = DEFAULT_BACKEND, cache_path: str | Path | None = None, **options: Any) -> CachedScorer:
    """A cached scorer; `cache_path` defaults to the user cache folder. `hf:<model>` is any Hugging Face
    toxicity classifier (see `hf_classifier`); `options` go to the backend's constructor."""
    check_scorer_name(name)
    backend: ToxicityScorer
    if name in ("jigsaw-bilstm", "offline"):
        backend = JigsawBiLSTMScorer(**options)
    elif name == "detoxify":
        backend = DetoxifyScorer(**options)
    elif name == "perspective":
        backend = PerspectiveScorer(**options)
    else:
        backend = HFClassifierScorer.from_spec(name.removeprefix(HF_PREFIX), **options)
    cache = ScoreCache(cache_path or cache_root() / "scores.sqlite")
    return CachedScorer(backend, cache, batch_size=getattr(backend, "preferred_batch_size", 64))
