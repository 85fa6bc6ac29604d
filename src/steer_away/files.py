"""Reading the files users hand us (JSON, TOML) and opening our SQLite stores: parsed as data, with
errors that name the file."""

from __future__ import annotations

import json
import sqlite3
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from steer_away.errors import InputError


def read_structured(path: str | Path, what: str, fmt: Literal["json", "toml"],
                    error: type[ValueError] = InputError) -> object:
    """Parse a JSON or TOML file; FileNotFoundError / `error` say which file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    try:
        return tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path} is not valid {fmt.upper()}: {err}") from err


class StoreError(InputError):
    """A SQLite store that is damaged, empty when it must not be, or belongs to something else."""


def open_sqlite(path: str | Path, what: str, tables: Sequence[str], *, create: bool = True) -> sqlite3.Connection:
    """Connect to one of our SQLite stores, refusing in one line a file that is not one.

    `tables` are the store's own tables: a database that has tables but none of these is someone
    else's, and is left untouched. With `create=False` a missing or empty file is an error (a
    reader must not conjure up an empty store from a mistyped path).
    """
    path = Path(path)
    if not create:
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
        if path.stat().st_size == 0:
            raise StoreError(f"{path} is empty (0 bytes): not a {what}")
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, timeout=60)
    try:
        existing = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as err:
        db.close()
        raise StoreError(f"{path} is not a readable SQLite {what} ({err}); it may be damaged: move it away and "
                         "run again (nothing in it can be reused)") from None
    if existing and not existing & set(tables):
        db.close()
        raise StoreError(f"{path} is a SQLite database of something else (tables: {', '.join(sorted(existing))}), "
                         f"not a {what}; choose another path")
    if existing:  # a damaged page further in passes the header check and fails some later query
        try:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as err:
            problems = [str(err)]
        if problems != ["ok"]:
            db.close()
            found = " ".join("; ".join(problems).split())[:200]  # one line: SQLite's report spans several
            raise StoreError(f"{path} is a damaged SQLite {what} ({found}); move it away and "
                             "run again, or restore it from a copy") from None
    return db
