"""A method's arguments as a typed dataclass, read from configs, flags and request bodies.

Configs, the command line and the server all build a method from a mapping of strings; this module
turns such a mapping into a :class:`MethodArgs` (or a row's :class:`RowOverrides`) with each value
read as its annotated type, and holds the one rule for a method's strength α (:class:`Strength`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from steer_away.errors import InputError


class RowOverrideError(InputError):
    """A per-row override its method cannot use; `key` names it (the server answers `steering.<key>`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


R = TypeVar("R", bound="RowOverrides")


@dataclass(frozen=True)
class RowOverrides:
    """Per-row choices a method takes beyond the user and α: a subclass per method that has any
    (the logit methods: a category), each field defaulting to None, "not overridden"."""

    @classmethod
    def from_mapping(cls: type[R], raw: Mapping[str, object]) -> R:
        """The fields found in `raw` (other keys are not this method's), read as their annotated types."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in raw:
                try:
                    values[f.name] = _coerce(raw[f.name], hints[f.name])
                except (TypeError, ValueError) as err:
                    raise RowOverrideError(f.name, f"{f.name}: {err}") from None
        return cls(**values)


STRENGTH_LIMIT = 1000.0  # far past any useful strength (the CAA study's largest is 25): a larger one is a typo


@dataclass(frozen=True)
class Strength:
    """Which argument is a method's strength α, and the one rule for it: its arguments, per-row
    overrides and category files are checked by `check`, and labels show it by `label`."""

    argument: str = "alpha"
    limit: float = STRENGTH_LIMIT
    unset: str = "default"  # what a label shows for a strength left as None (the method picks one per row)
    minimum: float | None = None  # the smallest it may be, where a negative one would invert the method

    def check(self, value: float | None) -> None:
        """Finite and at most `limit` in size (and at least `minimum`); None: not given."""
        if value is not None and not (math.isfinite(value) and abs(value) <= self.limit):
            raise InputError(f"{self.argument} must be finite with |{self.argument}| <= {self.limit:g}, got {value}")
        if value is not None and self.minimum is not None and value < self.minimum:
            raise InputError(f"{self.argument} must be at least {self.minimum:g}, got {value}")

    def label(self, value: float | None) -> str:
        return "α=" + (self.unset if value is None else f"{value:g}")


class MethodArgsError(InputError):
    """A method argument that does not exist or has a bad value; names where it came from."""


A = TypeVar("A", bound="MethodArgs")


@dataclass(frozen=True)
class MethodArgs:
    """A method's arguments: a frozen dataclass of plain values (numbers, strings, None).

    Subclasses add fields (with `metadata={"help": ...}` for the command line) and `validate`.
    Being plain values, the whole dataclass names a sweep cell (its hash), travels to Ray workers
    and reads from TOML, JSON or command-line strings alike. A method with a strength says which
    argument it is (`strength`): labels, sweep cells and limits read it from there.
    """

    strength: ClassVar[Strength | None] = None

    def __post_init__(self) -> None:
        if self.strength is not None:
            self.strength.check(self.strength_value())
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for a value the method cannot use."""

    def extraction_layers(self) -> str | None:
        """Layer spec whose activations this method's vectors must be extracted at (None: no vectors)."""
        return None

    def wrapped(self) -> str | None:
        """The registered method these arguments wrap (whose samples or steering they build on), if any;
        what that method needs is then needed too."""
        return None

    def identity(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def strength_value(self) -> float | None:
        """The strength α these arguments set (None: none set, or the method has no strength)."""
        return None if self.strength is None else getattr(self, self.strength.argument)

    @classmethod
    def check_row_strength(cls, value: float | None) -> None:
        """A per-row strength override obeys the method's strength rule (the common one if it has none)."""
        (cls.strength or Strength()).check(value)

    def settings(self) -> str:
        """The arguments that differ from their defaults, other than the strength: 'gate=prefill layers=14-20'."""
        strength = self.strength.argument if self.strength is not None else None
        return " ".join(f"{k}={'none' if v is None else v}" for k, v in self.changed().items() if k != strength)

    def describe(self) -> str:
        """'α=1 gate=prefill': the strength (for a method that has one), then the settings."""
        parts = [self.strength.label(self.strength_value())] if self.strength is not None else []
        settings = self.settings()
        return " ".join(parts + ([settings] if settings else []))

    def changed(self) -> dict[str, Any]:
        """The fields that differ from their defaults (what a label needs to show)."""
        defaults = type(self)()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(defaults, f.name)}

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls: type[A], raw: Mapping[str, object], where: str = "arguments") -> A:
        """Build from TOML / JSON values or command-line strings; unknown keys and bad values are
        errors that name `where` and the key (with a suggestion for a misspelt one)."""
        hints = typing.get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f" (it takes: {', '.join(known) or 'none'})"
                raise MethodArgsError(f"{where}: unknown argument '{key}'{hint}")
            try:
                values[key] = _coerce(value, hints[key])
            except (TypeError, ValueError) as err:
                raise MethodArgsError(f"{where}: argument '{key}': {err}") from None
        try:
            return cls(**values)
        except ValueError as err:
            raise MethodArgsError(f"{where}: {err}") from None


def _coerce(value: object, hint: object) -> object:
    """`value` as the annotated type: float, int, str, bool, or an `X | None` of those."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        if type(None) in options:
            return None
        raise InputError("must not be empty")
    for option in options:
        if option is type(None):
            continue
        if option is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
        elif option is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
        elif option is str and isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise InputError(f"expected {names}, got {value!r}")
