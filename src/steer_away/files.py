"""Reading the files users hand us (JSON, TOML) and opening our SQLite stores: parsed as data, with
errors that name the file."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import tomllib
from collections.abc import Callable, Sequence
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
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a {fmt.upper()} file") from None
    except UnicodeDecodeError as err:
        raise error(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
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


class OutputError(InputError):
    """An output path that cannot be written: a folder, a device, no permission, no space."""


def lone_surrogate_at(text: str) -> int | None:
    """Where `text` holds an unpaired UTF-16 surrogate (JSON's "\\ud800", or a byte the shell could not
    decode), which no encoder, tokenizer or hash can take; None when it holds none."""
    return next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)


def lone_surrogate_field(value: object, path: str = "") -> str | None:
    """Where in a parsed JSON body a string holds an unpaired surrogate (JSON lets "\\ud800" through;
    no tokenizer, log or response can encode it): the field's dotted path, or None."""
    if isinstance(value, str):
        return path or "(body)" if any("\ud800" <= ch <= "\udfff" for ch in value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and lone_surrogate_field(key) is not None:
            return f"{path}.(key)" if path else "(key)"
        found = lone_surrogate_field(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def check_output(path: str | Path, what: str) -> Path:
    """Refuse, before any work, an output file that could not be written: an existing folder or device,
    a folder that is not writable, or missing folders that would be made at the filesystem's root (a
    typo's sign). Missing folders below an existing one are made when the file is written."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise OutputError(f"{what} {path} exists and is not a regular file (a folder or a device); "
                          "give a file path")
    folder = path.absolute().parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if existing != folder and existing.parent == existing:
        raise OutputError(f"{what} {path}: its folder {path.parent} does not exist, and would be made at the "
                          "filesystem's root; make it first if that is meant")
    if not existing.is_dir():
        raise OutputError(f"{what} {path}: {existing} is not a folder")
    try:  # a real file, not os.access: root passes every permission check, and /proc refuses new files anyway
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise OutputError(f"{what} {path}: cannot write in {existing} ({err.strerror or err})") from None
    return path


def write_atomically(path: str | Path, what: str, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` into a temporary file beside `path`, then rename it over `path`: a reader never sees
    half a file, and a failed write (no space, no permission) leaves no temporary file and names `path`."""
    path = check_output(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        umask = os.umask(0o22)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)  # as open() would make it (mkstemp's file is private)
    except OSError as err:
        raise OutputError(f"cannot write {what} {path}: {err.strerror or err}") from None
    tmp = Path(name)
    try:
        write(tmp)
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {what} {path}: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
