"""SQLite cache of toxicity scores, keyed by (backend, attribute, text hash).

Each finished batch is committed at once, so a crash or Ctrl-C never loses a paid-for score and a
rerun over the same texts makes no backend calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from steer_away.files import open_sqlite
from steer_away.scoring.base import ToxicityScorer


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ScoreCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_sqlite(self.path, "score cache", ["scores"])
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS scores (backend TEXT, attribute TEXT, text_hash TEXT, value REAL,"
            " PRIMARY KEY (backend, attribute, text_hash))"
        )
        self._db.commit()

    def get(self, backend: str, attributes: Sequence[str], texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Scores already known, by text hash; a text is known only if all its attributes are."""
        hashes = sorted({text_hash(t) for t in texts})
        found: dict[str, dict[str, float]] = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT text_hash, attribute, value FROM scores WHERE backend=? AND text_hash IN ({marks})",
                [backend, *chunk],
            )
            for h, attr, value in rows:
                found.setdefault(h, {})[attr] = value
        return {h: np.array([v[a] for a in attributes]) for h, v in found.items()
                if all(a in v for a in attributes)}

    def put(self, backend: str, attributes: Sequence[str], texts: Sequence[str], scores: np.ndarray) -> None:
        rows = [(backend, attr, text_hash(text), float(score[i]))
                for text, score in zip(texts, scores) for i, attr in enumerate(attributes)]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()


class CachedScorer(ToxicityScorer):
    """Wraps a backend so each distinct text is scored once, ever, per backend."""

    def __init__(self, inner: ToxicityScorer, cache: ScoreCache, batch_size: int = 64) -> None:
        self.inner = inner
        self.cache = cache
        self.batch_size = batch_size
        self.backend = inner.backend
        self.attributes = inner.attributes
        self.backend_calls = 0  # texts sent to the backend, for tests and logs
        self.cache_hits = 0

    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        hashes = [text_hash(t) for t in texts]
        known = self.cache.get(self.backend, self.attributes, texts)
        missing = list(dict.fromkeys(t for t, h in zip(texts, hashes) if h not in known))
        self.cache_hits += sum(1 for h in hashes if h in known)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            scores = self.inner.score(chunk)
            self.backend_calls += len(chunk)
            self.cache.put(self.backend, self.attributes, chunk, scores)
            known.update({text_hash(t): s for t, s in zip(chunk, scores)})
        return np.stack([known[h] for h in hashes])
