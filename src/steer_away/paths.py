"""Where steer-away keeps reusable artefacts on disk (de-quantised weights, score caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Folder for de-quantised weights and other reusable artefacts (STEER_AWAY_CACHE overrides)."""
    env = os.environ.get("STEER_AWAY_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "steer-away"
