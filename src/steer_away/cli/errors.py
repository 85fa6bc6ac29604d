"""Which errors are the user's (one line, no traceback) and which are ours (the traceback stays)."""

from __future__ import annotations

from rich.text import Text

from steer_away.console import console
from steer_away.errors import InputError
from steer_away.models import ModelLoadError
from steer_away.scoring.base import ScorerError


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


# Wrong input: a flag, a config, a file we were pointed at (every library input check raises an
# InputError subclass that names what is wrong). Exit code 2.
INPUT_ERRORS: tuple[type[Exception], ...] = (UsageError, InputError, FileNotFoundError)
# The environment refused: a model that cannot load, a scorer that is missing or refused. Exit code 1.
ENVIRONMENT_ERRORS: tuple[type[Exception], ...] = (ModelLoadError, ScorerError)


def exit_code(err: BaseException) -> int | None:
    """2 for wrong input, 1 for a refusing environment, None for anything else (a bug: keep its traceback)."""
    if isinstance(err, INPUT_ERRORS):
        return 2
    if isinstance(err, ENVIRONMENT_ERRORS):
        return 1
    return None


def print_error(err: BaseException) -> None:
    # Text, not markup: messages quote config keys like [sweep] and paths that must print as they are.
    # soft_wrap: one line however long (a terminal folds it; a log or `2> file` keeps it whole)
    console.print(Text.assemble(("error: ", "bold red"), str(err)), soft_wrap=True)
