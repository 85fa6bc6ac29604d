"""Shared terminal output for the interfaces: a rich console for progress and logs (stderr), one for results
(stdout, so `| grep` and `> file` keep them), a spinner for slow steps, and the handler that shows the
library's progress messages (the library logs them; it never prints)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.highlighter import NullHighlighter
from rich.logging import RichHandler

console = Console(stderr=True)
results = Console()
for _out in (console, results):
    if not _out.is_terminal:  # logs, files and CI: wide enough for a result table row on one line
        _out.width = max(_out.width, 170)


@contextmanager
def status(message: str) -> Iterator[None]:
    with console.status(message, spinner="dots"):
        yield


def show_library_messages(level: int = logging.INFO) -> None:
    """Print the library's log messages (progress notes, warnings, with rich markup) on the console,
    as plain lines: what a command line wants; a program using the library keeps its own logging."""
    logger = logging.getLogger("steer_away")
    if any(isinstance(h, RichHandler) for h in logger.handlers):
        return
    handler = RichHandler(console=console, show_time=False, show_level=False, show_path=False, markup=True,
                          highlighter=NullHighlighter())
    logger.addHandler(handler)
    logger.setLevel(level)
