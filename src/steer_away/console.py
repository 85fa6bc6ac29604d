"""Shared terminal output: one rich console (stderr) and a spinner for slow steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console(stderr=True)


@contextmanager
def status(message: str) -> Iterator[None]:
    with console.status(message, spinner="dots"):
        yield
