"""Reading the JSON and TOML files users hand us: parsed as data, with errors that name the file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal


def read_structured(path: str | Path, what: str, fmt: Literal["json", "toml"],
                    error: type[ValueError] = ValueError) -> object:
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
