"""Shared terminal output: one rich console (stderr) and a spinner for slow steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console(stderr=True)
if not console.is_terminal:  # logs and CI: wide enough for the result tables
    console.width = max(console.width, 130)


@contextmanager
def status(message: str) -> Iterator[None]:
    with console.status(message, spinner="dots"):
        yield
