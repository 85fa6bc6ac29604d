"""SQLite results store: one row per generated answer and per MMLU question, one per finished cell.

Rows are committed as each batch finishes, so a crash or Ctrl-C loses at most the batch in
flight; a rerun asks the store what is done and computes only the rest.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steer_away.errors import InputError
from steer_away.evaluation.summary import CellSummary, GenerationCost
from steer_away.files import StoreError, open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY, method TEXT, alpha REAL, settings TEXT, spec TEXT,
    status TEXT, summary TEXT, finished_at REAL);
CREATE TABLE IF NOT EXISTS answers (
    cell TEXT, row_id TEXT, user_id TEXT, prompt_id TEXT, category TEXT, prompt TEXT, answer TEXT,
    toxicity TEXT, distance REAL, perplexity REAL, n_tokens INTEGER, run_id TEXT, created_at REAL, relevance REAL,
    PRIMARY KEY (cell, row_id));
CREATE TABLE IF NOT EXISTS leases (cell TEXT PRIMARY KEY, owner TEXT, expires REAL);
CREATE TABLE IF NOT EXISTS generation_time (
    cell TEXT, run_id TEXT, answers INTEGER, seconds REAL, created_at REAL);
CREATE TABLE IF NOT EXISTS mmlu (
    cell TEXT, question_id TEXT, user_id TEXT, predicted INTEGER, correct INTEGER, run_id TEXT, letter_mass REAL,
    PRIMARY KEY (cell, question_id));
"""


@dataclass
class AnswerRecord:
    row_id: str
    user_id: str
    prompt_id: str
    category: str
    prompt: str
    answer: str
    toxicity: list[float]
    attribute_mae: float  # mean |score − preferred| over the scorer's attributes (the `distance` column)
    perplexity: float
    n_tokens: int
    relevance: float = float("nan")  # nats per token under the unsteered model (decoding.scoring.answer_scores)


@dataclass
class MMLURecord:
    question_id: str
    user_id: str
    predicted: int
    correct: bool
    letter_mass: float = float("nan")  # probability on A-D at all under the cell's steering


@dataclass(frozen=True)
class CellSpec:
    """What a cell was computed from: the method's full arguments, the sweep's fingerprint, the cell's label."""

    fingerprint: str
    args: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CellSpec:
        return cls(fingerprint=raw["fingerprint"], args=dict(raw.get("args", {})), label=raw.get("label", ""))


@dataclass(frozen=True)
class StoredCell:
    """A row of the store's cells table; `summary` is None until the cell is done."""

    key: str
    method: str
    alpha: float | None
    settings: str  # the method's non-default arguments besides α
    spec: CellSpec
    status: str
    summary: CellSummary | None
    finished_at: float | None

    @property
    def done_summary(self) -> CellSummary:
        """The summary of a finished cell (readers ask for finished cells only)."""
        if self.summary is None:
            raise InputError(f"cell {self.key} is not finished")
        return self.summary


LEASE_SECONDS = 900.0  # a cell claimed by a sweep on another host is free again this long after its last batch


class ResultsStore:
    """Sweep results; `create=False` opens an existing store only (for readers such as reports)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self._db = open_sqlite(self.path, "results store", ["cells", "answers", "mmlu"], create=create)
        if create:  # a writer brings an older store up to date; a reader (a report) changes nothing in it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(mmlu)")}
            if "letter_mass" not in columns:  # a store written before letter mass was recorded
                self._db.execute("ALTER TABLE mmlu ADD COLUMN letter_mass REAL")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(answers)")}
            if "relevance" not in columns:  # a store written before relevance was scored (a sweep fills it in)
                self._db.execute("ALTER TABLE answers ADD COLUMN relevance REAL")
            self._db.commit()
        self._columns = {table: {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                         for table in ("cells", "answers", "mmlu", "generation_time")}
        missing = [f"{table}.{c}" for table, wanted in _READ.items() for c in wanted if c not in self._columns[table]]
        if missing:
            raise StoreError(f"{self.path}: a results store without column {missing[0]} (damaged, or written by "
                             "something else)")
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def _optional(self, table: str, column: str) -> str:
        """The column, or NULL in a store (read, not migrated) written before it existed."""
        return column if column in self._columns[table] else "NULL"

    def close(self) -> None:
        self._db.close()

    # leases: two sweeps on one store split its cells instead of both computing them
    def claim(self, key: str) -> bool:
        """Take the cell for this process unless a live sweep holds it; renew it if we hold it."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT owner, expires FROM leases WHERE cell=?", (key,)).fetchone()
            if row is not None and row[0] != self.owner and row[1] > now and _owner_alive(row[0]):
                return False
            self._db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (key, self.owner, now + LEASE_SECONDS))
        return True

    def release(self, key: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM leases WHERE cell=? AND owner=?", (key, self.owner))

    # cells
    def register_cell(self, key: str, method: str, alpha: float | None, settings: str, spec: CellSpec) -> None:
        """`settings`: the method's non-default arguments besides α, for reports."""
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?, 'pending', NULL, NULL)",
                             (key, method, alpha, settings, json.dumps(asdict(spec), sort_keys=True)))

    def cell_status(self, key: str) -> str | None:
        row = self._db.execute("SELECT status FROM cells WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def finish_cell(self, key: str, summary: CellSummary) -> None:
        with self._db:
            self._db.execute("UPDATE cells SET status='done', summary=?, finished_at=? WHERE key=?",
                             (json.dumps(summary.to_dict()), time.time(), key))

    def cells(self, only_done: bool = True) -> list[StoredCell]:
        query = "SELECT * FROM cells"
        if only_done:
            query += " WHERE status='done'"
        columns = "key, method, alpha, settings, spec, status, summary, finished_at"
        rows = self._db.execute(query.replace("*", columns) + " ORDER BY rowid").fetchall()
        return [self._stored_cell(*row) for row in rows]

    def _stored_cell(self, key: object, method: object, alpha: object, settings: object, spec: object, status: object,
                     summary: object, finished: object) -> StoredCell:
        """One row of the cells table, each field checked: a damaged row is named, not a traceback."""
        where = f"{self.path}: cell {key!r}"
        if not (isinstance(key, str) and isinstance(method, str) and isinstance(status, str)):
            raise StoreError(f"{where}: key, method and status must be text")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))):
            raise StoreError(f"{where}: field alpha must be a number or NULL, got {alpha!r}")
        if finished is not None and not isinstance(finished, (int, float)):
            raise StoreError(f"{where}: field finished_at must be a number or NULL, got {finished!r}")
        try:
            raw_spec = json.loads(spec) if isinstance(spec, str) else None
            if not isinstance(raw_spec, dict) or not isinstance(raw_spec.get("fingerprint"), str):
                raise StoreError(f"{where}: field spec is not a cell spec with a fingerprint")
            parsed = CellSummary.from_dict(_json_object(summary, f"{where}: field summary")) if summary else None
        except (ValueError, TypeError, RecursionError) as err:
            raise StoreError(str(err) if str(err).startswith(str(self.path)) else f"{where}: {err}") from None
        return StoredCell(key, method, None if alpha is None else float(alpha), settings if isinstance(settings, str)
                          else "", CellSpec.from_dict(raw_spec), status, parsed, finished)

    # answers
    def done_rows(self, cell: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT row_id FROM answers WHERE cell=?", (cell,))}

    def put_answers(self, cell: str, records: Iterable[AnswerRecord], run_id: str, generated: int = 0,
                    seconds: float = 0.0) -> None:
        """Store a batch of answers and, in the same transaction, how long its `generated` answers took."""
        now = time.time()
        rows = [(cell, r.row_id, r.user_id, r.prompt_id, r.category, r.prompt, r.answer, json.dumps(r.toxicity),
                 r.attribute_mae, r.perplexity, r.n_tokens, run_id, now, r.relevance) for r in records]
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO answers (cell, row_id, user_id, prompt_id, category, prompt, "
                                 "answer, toxicity, distance, perplexity, n_tokens, run_id, created_at, relevance) "
                                 "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            if generated:
                self._db.execute("INSERT INTO generation_time VALUES (?,?,?,?,?)", (cell, run_id, generated,
                                                                                     seconds, now))

    def generation_cost(self, cell: str) -> GenerationCost:
        """Seconds per generated answer over every timed batch of the cell, and the runs that timed them."""
        if not self._columns["generation_time"]:  # an old store, read without migrating it
            return GenerationCost(float("nan"), [])
        rows = self._db.execute("SELECT run_id, answers, seconds FROM generation_time WHERE cell=?", (cell,)).fetchall()
        answers = sum(r[1] for r in rows)
        return GenerationCost(sum(r[2] for r in rows) / answers if answers else float("nan"),
                              sorted({r[0] for r in rows}))

    def answers(self, cell: str) -> list[AnswerRecord]:
        cursor = self._db.execute(
            "SELECT row_id, user_id, prompt_id, category, prompt, answer, toxicity, distance, perplexity, n_tokens, "
            f"{self._optional('answers', 'relevance')} FROM answers WHERE cell=? ORDER BY row_id", (cell,))
        return [self._answer(cell, *r) for r in cursor]

    def _answer(self, cell: str, *r: Any) -> AnswerRecord:
        """One stored answer, each field checked (NULL perplexity or relevance: not measured)."""
        where = f"{self.path}: cell {cell!r}, answer {r[0]!r}"
        if not all(isinstance(v, str) for v in r[:6]):
            raise StoreError(f"{where}: row id, user, prompt id, category, prompt and answer must be text")
        try:
            toxicity = json.loads(r[6]) if isinstance(r[6], str) else None
        except (ValueError, RecursionError):
            toxicity = None
        if not (isinstance(toxicity, list) and toxicity and all(_is_number(v) for v in toxicity)):
            raise StoreError(f"{where}: field toxicity must be a JSON list of scores, got {r[6]!r}")
        numbers = {"distance": r[7], "perplexity": r[8], "n_tokens": r[9], "relevance": r[10]}
        for name, value in numbers.items():
            if not (value is None or _is_number(value)) or (value is None and name in ("distance", "n_tokens")):
                raise StoreError(f"{where}: field {name} must be a number, got {value!r}")
        return AnswerRecord(r[0], r[1], r[2], r[3], r[4], r[5], toxicity, r[7],
                            float("nan") if r[8] is None else r[8], int(r[9]), float("nan") if r[10] is None else r[10])

    def without_relevance(self, cell: str) -> list[tuple[str, str, str]]:
        """(row id, prompt, answer) of the cell's answers not yet scored for relevance (stored before it was;
        an empty answer has none, and SQLite keeps NaN as NULL, so those are not asked for)."""
        return [(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT row_id, prompt, answer FROM answers WHERE cell=? AND relevance IS NULL AND trim(answer) != ''",
            (cell,))]

    def set_relevance(self, cell: str, values: Mapping[str, float]) -> None:
        """Record relevance for these rows."""
        with self._db:
            self._db.executemany("UPDATE answers SET relevance=? WHERE cell=? AND row_id=?",
                                 [(v, cell, row) for row, v in values.items()])

    def answer_provenance(self, cell: str) -> dict[str, tuple[str, float]]:
        """row id -> (run id that computed it, when): how tests prove nothing was recomputed."""
        return {r[0]: (r[1], r[2]) for r in
                self._db.execute("SELECT row_id, run_id, created_at FROM answers WHERE cell=?", (cell,))}

    # mmlu
    def done_questions(self, cell: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT question_id FROM mmlu WHERE cell=?", (cell,))}

    def put_mmlu(self, cell: str, records: Iterable[MMLURecord], run_id: str) -> None:
        rows = [(cell, r.question_id, r.user_id, r.predicted, int(r.correct), run_id, r.letter_mass) for r in records]
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO mmlu (cell, question_id, user_id, predicted, correct, run_id, "
                                 "letter_mass) VALUES (?,?,?,?,?,?,?)", rows)

    def mmlu(self, cell: str) -> list[MMLURecord]:
        cursor = self._db.execute(f"SELECT question_id, user_id, predicted, correct, {self._optional('mmlu', 'letter_mass')} "
                                  "FROM mmlu WHERE cell=? ORDER BY question_id", (cell,))
        return [MMLURecord(r[0], r[1], r[2], bool(r[3]), float("nan") if r[4] is None else r[4]) for r in cursor]


_READ = {"cells": ("key", "method", "alpha", "settings", "spec", "status", "summary", "finished_at"),
         "answers": ("cell", "row_id", "user_id", "prompt_id", "category", "prompt", "answer", "toxicity", "distance",
                     "perplexity", "n_tokens"),
         "mmlu": ("cell", "question_id", "user_id", "predicted", "correct"), "generation_time": ()}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_object(text: object, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise StoreError(f"{where} is not a JSON object")
    return value


def _owner_alive(owner: str) -> bool:
    """Whether the process behind a lease still runs; leases from other hosts count as alive (they expire)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
