"""Steering categories: the expert and anti-expert prompts, example exchanges, α and β that logit
steering (EADS, ACD) uses for each sensitivity level, and the system prompt (with its own example
exchanges) that profile prompting states a user's tolerance with; read from a TOML file and checked
on load.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from steer_away.errors import InputError
from steer_away.files import read_structured
from steer_away.resources import steering_categories_path
from steer_away.steering.framework.arguments import Strength

# The logit methods' strength: α, by default each category's own (labels then show "α=category").
LOGIT_STRENGTH = Strength("alpha", unset="category")


class CategoryConfigError(InputError):
    """A steering-category file that is missing a category or has a bad value; names file and field."""


Exchange = tuple[str, str]  # (user message, assistant reply) shown to a branch as an earlier turn


@dataclass(frozen=True)
class SteeringCategory:
    name: str
    expert: str
    anti_expert: str
    alpha: float
    beta: float = 0.1
    expert_examples: tuple[Exchange, ...] = ()
    anti_expert_examples: tuple[Exchange, ...] = ()
    prompt: str | None = None  # the user's tolerance in words, as a system prompt (profile prompting)
    prompt_examples: tuple[Exchange, ...] = ()


CATEGORY_KEYS = ("expert", "anti_expert", "alpha", "beta", "expert_examples", "anti_expert_examples", "prompt",
                 "prompt_examples")
EXAMPLE_SETS = "example_sets"  # the reserved top-level table of named example exchanges


def _example_sets(raw: dict, path: Path) -> dict[str, tuple[Exchange, ...]]:
    table = raw.pop(EXAMPLE_SETS, {})
    if not isinstance(table, dict):
        raise CategoryConfigError(f"{path}: [{EXAMPLE_SETS}] must be a table of named lists")
    sets: dict[str, tuple[Exchange, ...]] = {}
    for name, items in table.items():
        if not isinstance(items, list) or not items:
            raise CategoryConfigError(f"{path}: {EXAMPLE_SETS}.{name} must be a non-empty list of "
                                      "{{ user = ..., assistant = ... }} exchanges")
        exchanges = []
        for index, item in enumerate(items):
            where = f"{path}: {EXAMPLE_SETS}.{name}[{index}]"
            if not isinstance(item, dict) or set(item) != {"user", "assistant"}:
                raise CategoryConfigError(f"{where} must have exactly the keys 'user' and 'assistant'")
            if not all(isinstance(item[k], str) and item[k].strip() for k in ("user", "assistant")):
                raise CategoryConfigError(f"{where}: 'user' and 'assistant' must be non-empty strings")
            exchanges.append((item["user"], item["assistant"]))
        sets[name] = tuple(exchanges)
    return sets


def load_categories(path: str | Path | None = None, required: Sequence[str] = ("strict", "moderate", "tolerant")
                    ) -> dict[str, SteeringCategory]:
    """Read a TOML file of categories (default: the one shipped with the package) and check it."""
    path = Path(path) if path is not None else steering_categories_path()
    raw = read_structured(path, "steering-category file", "toml", CategoryConfigError)
    if not isinstance(raw, dict):
        raise CategoryConfigError(f"{path}: expected one table per category")
    raw = dict(raw)
    example_sets = _example_sets(raw, path)
    missing = [name for name in required if name not in raw]
    if missing:
        raise CategoryConfigError(f"{path}: missing category {missing[0]!r} (needs {', '.join(required)})")
    out = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise CategoryConfigError(f"{path}: [{name}] must be a table")
        for key in table:
            if key not in CATEGORY_KEYS:
                close = difflib.get_close_matches(key, CATEGORY_KEYS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f" (keys: {', '.join(CATEGORY_KEYS)})"
                raise CategoryConfigError(f"{path}: [{name}].{key} is not a category key{hint}")
        for key in ("expert", "anti_expert"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise CategoryConfigError(f"{path}: [{name}].{key} must be a non-empty string")
        for key, default in (("alpha", None), ("beta", 0.1)):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CategoryConfigError(f"{path}: [{name}].{key} must be a finite number, got {value!r}")
        if abs(float(table["alpha"])) > LOGIT_STRENGTH.limit:
            raise CategoryConfigError(f"{path}: [{name}].alpha must be at most {LOGIT_STRENGTH.limit:g} in size, "
                                      f"got {table['alpha']}")
        beta = float(table.get("beta", 0.1))
        if not 0 < beta <= 1:
            raise CategoryConfigError(f"{path}: [{name}].beta must be in (0, 1], got {beta}")
        prompt = table.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
            raise CategoryConfigError(f"{path}: [{name}].prompt must be a non-empty string when given")
        examples: dict[str, tuple[Exchange, ...]] = {}
        for key in ("expert_examples", "anti_expert_examples", "prompt_examples"):
            ref = table.get(key)
            if ref is None:
                examples[key] = ()
            elif not isinstance(ref, str) or ref not in example_sets:
                raise CategoryConfigError(f"{path}: [{name}].{key} must name a list in [{EXAMPLE_SETS}] "
                                          f"(have: {', '.join(sorted(example_sets)) or 'none'}), got {ref!r}")
            else:
                examples[key] = example_sets[ref]
        out[name] = SteeringCategory(name=name, expert=table["expert"], anti_expert=table["anti_expert"],
                                     alpha=float(table["alpha"]), beta=beta, prompt=prompt, **examples)
    return out
