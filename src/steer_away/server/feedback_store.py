"""Users' choices, one row an event, in SQLite: committed before the client hears "recorded".

WAL with `synchronous=FULL`: an acknowledged event is on disk, so neither a killed server (kill -9)
nor a power cut loses it. An event id is the idempotency key: the same event sent twice is stored
once, and another event under a used id is refused.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from steer_away.errors import InputError
from steer_away.profiles.online import Choice

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,  -- JSON list of texts
    rating REAL,
    digest TEXT NOT NULL,  -- of the event's content: a resent event matches it, a different one does not
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id);
"""


def digest(choice: Choice) -> str:
    content = [choice.user_id, choice.prompt, choice.chosen, list(choice.rejected), choice.rating]
    return hashlib.sha256(json.dumps(content).encode("utf-8", "surrogatepass")).hexdigest()


class FeedbackStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as err:
            raise InputError(f"{self.path}: cannot use it as the feedback store: {err}") from None
        self._lock = threading.Lock()

    def add(self, choice: Choice) -> str:
        """'recorded', 'duplicate' (the same event again) or 'conflict' (another event under this id)."""
        with self._lock:
            row = self._db.execute("SELECT digest FROM events WHERE event_id=?", (choice.event_id,)).fetchone()
            if row is not None:
                return "duplicate" if row[0] == digest(choice) else "conflict"
            self._db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
                             (choice.event_id, choice.user_id, choice.prompt, choice.chosen,
                              json.dumps(list(choice.rejected)), choice.rating, digest(choice), time.time()))
        return "recorded"

    def events(self, user_id: str | None = None) -> Iterator[Choice]:
        """In the order they were received."""
        query = "SELECT event_id, user_id, prompt, chosen, rejected, rating FROM events"
        args: tuple[str, ...] = ()
        if user_id is not None:
            query, args = query + " WHERE user_id=?", (user_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY rowid", args).fetchall()
        for event_id, user, prompt, chosen, rejected, rating in rows:
            yield Choice(event_id, user, prompt, chosen, tuple(json.loads(rejected)), rating)

    def forget(self, user_id: str) -> int:
        """Delete every event of a user; how many there were."""
        with self._lock:
            return self._db.execute("DELETE FROM events WHERE user_id=?", (user_id,)).rowcount

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
