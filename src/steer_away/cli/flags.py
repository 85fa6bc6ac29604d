"""Typed flag values: each refuses, at parse time and naming the flag, what the command could not use
(argparse prints `error: argument --port: …` and exits 2), so no bad number reaches the library."""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable

from steer_away.files import lone_surrogate_at


@functools.cache  # one parser per range: a flag shared by several commands is the same flag (tested)
def count(minimum: int = 1) -> Callable[[str], int]:
    """A whole number of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


@functools.cache
def number(low: float | None = None, high: float | None = None, *, above: float | None = None
           ) -> Callable[[str], float]:
    """A finite number in [low, high] (or above `above`, exclusive)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if (low is not None and value < low) or (high is not None and value > high) or \
                (above is not None and value <= above):
            span = f"above {above:g}" if above is not None else \
                f"in {'-∞' if low is None else f'{low:g}'}–{'∞' if high is None else f'{high:g}'}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value:g}")
        return value
    return parse


def port(text: str) -> int:
    value = count(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1-65535, got {value}")
    return value


def text(value: str) -> str:
    """Text as the shell gave it; bytes that are not UTF-8 arrive as lone surrogates and are refused."""
    at = lone_surrogate_at(value)
    if at is not None:
        raise argparse.ArgumentTypeError(f"is not valid UTF-8 text (an undecodable byte at character {at})")
    return value


def key(value: str) -> str:
    """A non-empty secret: an empty one (an unset shell variable) must not turn authentication off."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty; give a key, or leave the flag out to serve without one")
    return text(value)
