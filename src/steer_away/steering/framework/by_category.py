"""Methods that steer each user by a category of their sensitivity (EADS, ACD, profile prompting).

The category file (categories.py) holds one entry per sensitivity level; a row's category is its
user's sensitivity, mapped where the arguments say so, a per-row override, or the default for users
without a profile. Rows of one category are steered alike, whoever they are for.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from steer_away.chat import Conversation
from steer_away.errors import InputError
from steer_away.steering.framework.arguments import MethodArgs, RowOverrideError, RowOverrides
from steer_away.steering.framework.categories import CategoryConfigError, Exchange, SteeringCategory, load_categories
from steer_away.steering.framework.method import RowSteering, SteeringMethod

if TYPE_CHECKING:
    from steer_away.profiles import UserProfile


class UnknownCategoryError(RowOverrideError, CategoryConfigError):
    """A row asked for a steering category that the category file does not have."""


@dataclass(frozen=True)
class CategoryOverride(RowOverrides):
    """A row's own steering category, instead of the one its user's sensitivity picks."""

    category: str | None = None


def with_context(conversation: Conversation, system: str, examples: Sequence[Exchange] = ()) -> Conversation:
    """The conversation behind `system` (merged with a system message it already has) and the example
    exchanges, as earlier turns: what an expert or anti-expert branch, or a prompted model, sees."""
    own_system = conversation[0]["content"] if conversation and conversation[0].get("role") == "system" else None
    rest = conversation[1:] if own_system is not None else conversation
    shots: list[dict[str, str]] = []
    for user, assistant in examples:
        shots += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    merged = system if own_system is None else f"{system}\n\n{own_system}"
    return [{"role": "system", "content": merged}, *shots, *rest]


def shared_head(context: Conversation, conversation: Conversation) -> Conversation:
    """The leading messages `with_context` put before `conversation`'s own turns (the same for every
    row of a category, so their keys and values can be computed once)."""
    own = len(conversation) - (1 if conversation and conversation[0].get("role") == "system" else 0)
    return context[:len(context) - own]


def parse_category_map(text: str) -> dict[str, str]:
    """'tolerant=tolerant-inverted,strict=mine' -> {'tolerant': 'tolerant-inverted', 'strict': 'mine'}."""
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"category_map entries look like 'sensitivity=category', got {item!r}")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class CategoryArgs(MethodArgs):
    """The arguments every method steering by category takes."""

    default_category: str = field(default="moderate", metadata={
        "help": "category for users without a profile (strict, moderate, tolerant, or one of yours)"})
    category_map: str = field(default="", metadata={
        "help": "use another category for a sensitivity, e.g. 'tolerant=tolerant-inverted' (our extension)"})

    def validate(self) -> None:
        parse_category_map(self.category_map)


class CategorySteering(SteeringMethod):
    """Picks each row's category from its user's sensitivity (unknown users: `default_category`)."""

    row_overrides = CategoryOverride

    def __init__(
        self,
        categories: Mapping[str, SteeringCategory] | None = None,
        profiles: Mapping[str, UserProfile] | None = None,
        *,
        default_category: str = "moderate",
        name: str | None = None,
        category_map: Mapping[str, str] | None = None,
    ) -> None:
        self.categories = dict(categories) if categories is not None else load_categories()
        if default_category not in self.categories:
            raise CategoryConfigError(f"default category {default_category!r} is not among "
                                      f"{sorted(self.categories)}")
        self.category_map = dict(category_map or {})  # sensitivity -> category, where it differs
        for sensitivity, target in self.category_map.items():
            if target not in self.categories:
                raise CategoryConfigError(f"category map sends {sensitivity!r} to {target!r}, which is not among "
                                          f"{sorted(self.categories)}")
        self.profiles = dict(profiles or {})
        self.default_category = default_category
        if name is not None:
            self.name = name
        self.personalised = bool(self.profiles)

    def category_named(self, name: str) -> SteeringCategory:
        try:
            return self.categories[name]
        except KeyError:
            raise UnknownCategoryError("category", f"unknown steering category {name!r} "
                                                   f"(have {sorted(self.categories)})") from None

    def check_overrides(self, overrides: RowOverrides) -> None:
        if isinstance(overrides, CategoryOverride) and overrides.category is not None:
            self.category_named(overrides.category)

    def category_for(self, user_id: str | None) -> SteeringCategory:
        profile = self.profiles.get(user_id) if user_id is not None else None
        if profile is None:
            return self.categories[self.default_category]
        sensitivity = getattr(profile, "sensitivity", None)
        sensitivity = self.category_map.get(str(sensitivity), sensitivity)
        if sensitivity not in self.categories:
            raise CategoryConfigError(f"user {user_id} has sensitivity {sensitivity!r}, which has no steering "
                                      f"category (have {sorted(self.categories)})")
        return self.categories[sensitivity]

    def row_category(self, row: RowSteering) -> SteeringCategory:
        """The row's own category if it names one, else its user's."""
        chosen = row.overrides.category if isinstance(row.overrides, CategoryOverride) else None
        return self.category_named(chosen) if chosen is not None else self.category_for(row.user_id)

    def answer_group(self, row: RowSteering) -> Hashable:
        """Rows of one steering category (and strength) are steered alike, whichever user they are for."""
        return (self.row_category(row).name, row.alpha)
