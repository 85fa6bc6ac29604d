"""Logit steering with expert and anti-expert branches of the same frozen model (EADS, ACD).

The expert branch is the user's conversation behind a system prompt for the language to move
toward, the anti-expert branch behind one for the language to avoid. All branches decode in one
batched forward pass per step (see generation.py); this module only says which branches to run
and how to combine their next-token scores.

Both methods are one primitive, a contrastive mixture of log-probabilities,
    score = log p_base + α · Σ_i c_i · log p_i      (i over the extra branches)
with EADS c = (+1 expert, −1 anti-expert) and ACD c = (−1 anti-expert), ACD then restricted to
the tokens the base finds plausible (p ≥ β·p_max). Log-probabilities give α the same meaning
whatever the branches' logit scales.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from steer_away.chat import Conversation
from steer_away.files import read_structured
from steer_away.steering.base import ALPHA_LIMIT, MethodArgs, PreparedBatch, RowSteering, SteeringMethod, check_alpha

if TYPE_CHECKING:
    from steer_away.models import LanguageModel
    from steer_away.profiles import UserProfile
    from steer_away.steering.registry import SteeringResources


class CategoryConfigError(ValueError):
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


CATEGORY_KEYS = ("expert", "anti_expert", "alpha", "beta", "expert_examples", "anti_expert_examples")
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
    if path is None:
        from steer_away.resources import steering_categories_path

        path = steering_categories_path()
    path = Path(path)
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
        if abs(float(table["alpha"])) > ALPHA_LIMIT:
            raise CategoryConfigError(f"{path}: [{name}].alpha must be at most {ALPHA_LIMIT:g} in size, "
                                      f"got {table['alpha']}")
        beta = float(table.get("beta", 0.1))
        if not 0 < beta <= 1:
            raise CategoryConfigError(f"{path}: [{name}].beta must be in (0, 1], got {beta}")
        examples: dict[str, tuple[Exchange, ...]] = {}
        for key in ("expert_examples", "anti_expert_examples"):
            ref = table.get(key)
            if ref is None:
                examples[key] = ()
            elif not isinstance(ref, str) or ref not in example_sets:
                raise CategoryConfigError(f"{path}: [{name}].{key} must name a list in [{EXAMPLE_SETS}] "
                                          f"(have: {', '.join(sorted(example_sets)) or 'none'}), got {ref!r}")
            else:
                examples[key] = example_sets[ref]
        out[name] = SteeringCategory(name=name, expert=table["expert"], anti_expert=table["anti_expert"],
                                     alpha=float(table["alpha"]), beta=beta, **examples)
    return out


def with_context(conversation: Conversation, system: str, examples: Sequence[Exchange] = ()) -> Conversation:
    """The conversation behind `system` (merged with a system message it already has) and the example
    exchanges, as earlier turns: what an expert or anti-expert branch sees. The base branch never does."""
    own_system = conversation[0]["content"] if conversation and conversation[0].get("role") == "system" else None
    rest = conversation[1:] if own_system is not None else conversation
    shots: list[dict[str, str]] = []
    for user, assistant in examples:
        shots += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    merged = system if own_system is None else f"{system}\n\n{own_system}"
    return [{"role": "system", "content": merged}, *shots, *rest]


def _own_turns(conversation: Conversation) -> int:
    """How many messages of a branch context are the conversation's own (after the shared prefix)."""
    return len(conversation) - (1 if conversation and conversation[0].get("role") == "system" else 0)


def branch_contexts(category: SteeringCategory, conversation: Conversation) -> dict[str, Conversation]:
    """The expert and anti-expert contexts of `category` around one conversation."""
    return {"expert": with_context(conversation, category.expert, category.expert_examples),
            "anti_expert": with_context(conversation, category.anti_expert, category.anti_expert_examples)}


def contrastive_mixture(logp: torch.Tensor, contrast: Sequence[float], alphas: torch.Tensor) -> torch.Tensor:
    """log p_base + α·Σ_i c_i·log p_i for (branches, batch, vocab) log-probabilities; `alphas` is (batch, 1).

    Branch 0 is the base; `contrast[i]` weighs branch i + 1.
    """
    if len(contrast) != logp.shape[0] - 1:
        raise ValueError(f"{len(contrast)} contrast weights for {logp.shape[0] - 1} extra branches")
    mixed = contrast[0] * logp[1]
    for weight, branch in zip(contrast[1:], logp[2:]):
        mixed = mixed + weight * branch
    return logp[0] + alphas.to(logp.device) * mixed


def plausible_only(scores: torch.Tensor, base: torch.Tensor, log_betas: torch.Tensor) -> torch.Tensor:
    """Keep the tokens whose base log-probability is within log β of the top token's; −inf elsewhere."""
    cutoff = base.max(dim=-1, keepdim=True).values + log_betas.to(base.device)
    return scores.masked_fill(base < cutoff, float("-inf"))


class _ContrastiveBatch(PreparedBatch):
    def __init__(self, branches: list[list[Conversation]], contrast: Sequence[float], alphas: torch.Tensor,
                 log_betas: torch.Tensor | None, prefixes: list[list[Conversation | None]] | None = None) -> None:
        super().__init__(branches, prefixes)
        self.contrast = tuple(contrast)
        self.alphas = alphas[:, None]  # (batch, 1)
        self.log_betas = log_betas[:, None] if log_betas is not None else None

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)
        scores = contrastive_mixture(logp, self.contrast, self.alphas)
        if self.log_betas is not None:
            scores = plausible_only(scores, logp[0], self.log_betas)
        return scores


class ContrastiveLogitSteering(SteeringMethod):
    """Base of EADS and ACD: extra branches behind category prompts, mixed by `contrast` weights.

    Each row's category is picked from its user's sensitivity (unknown users: `default_category`).
    Subclasses say which prompts make the extra branches, their weights, and whether the
    plausibility cut-off applies.
    """

    contrast: tuple[float, ...] = ()
    plausibility_cutoff = False

    def __init__(
        self,
        categories: Mapping[str, SteeringCategory] | None = None,
        profiles: Mapping[str, UserProfile] | None = None,
        *,
        default_category: str = "moderate",
        alpha: float | None = None,
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
        check_alpha(alpha)
        self.profiles = dict(profiles or {})
        self.default_category = default_category
        self.alpha = alpha
        if name is not None:
            self.name = name
        self.personalised = bool(self.profiles)

    def extra_branches(self, conversation: Conversation, category: SteeringCategory) -> list[Conversation]:
        raise NotImplementedError

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

    def prepare(self, lm: LanguageModel, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch:
        cats = []
        for row in rows:
            if row.category is not None and row.category not in self.categories:
                raise CategoryConfigError(f"unknown steering category {row.category!r} "
                                          f"(have {sorted(self.categories)})")
            cats.append(self.categories[row.category] if row.category else self.category_for(row.user_id))
        alphas = []
        for row, cat in zip(rows, cats):
            alpha = row.alpha if row.alpha is not None else self.alpha if self.alpha is not None else cat.alpha
            if not math.isfinite(alpha):
                raise ValueError(f"alpha for user {row.user_id} must be finite, got {alpha}")
            alphas.append(alpha)
        extra = [self.extra_branches(c, cat) for c, cat in zip(conversations, cats)]
        branches = [list(conversations)] + [[row[i] for row in extra] for i in range(len(self.contrast))]
        # Each extra branch's context starts with its category's system prompt and example exchanges,
        # the same for every row of that category: encoded once, shared by all of them.
        prefixes: list[list[Conversation | None]] = [[None] * len(conversations)]
        for branch in branches[1:]:
            prefixes.append([context[:len(context) - _own_turns(conv)] for context, conv in zip(branch, conversations)])
        log_betas = torch.tensor([math.log(c.beta) for c in cats]) if self.plausibility_cutoff else None
        return _ContrastiveBatch(branches, self.contrast, torch.tensor(alphas), log_betas, prefixes)


class EADS(ContrastiveLogitSteering):
    """Expert–anti-expert differential steering: log p_base + α·(log p_expert − log p_anti)."""

    name = "eads"
    contrast = (1.0, -1.0)

    def extra_branches(self, conversation: Conversation, category: SteeringCategory) -> list[Conversation]:
        contexts = branch_contexts(category, conversation)
        return [contexts["expert"], contexts["anti_expert"]]


class ACD(ContrastiveLogitSteering):
    """Anti-expert contrastive decoding: log p_base − α·log p_anti over the base's plausible tokens."""

    name = "acd"
    contrast = (-1.0,)
    plausibility_cutoff = True

    def extra_branches(self, conversation: Conversation, category: SteeringCategory) -> list[Conversation]:
        return [branch_contexts(category, conversation)["anti_expert"]]


# --- registry glue ---------------------------------------------------------------------------------


def parse_category_map(text: str) -> dict[str, str]:
    """'tolerant=tolerant-inverted,strict=mine' -> {'tolerant': 'tolerant-inverted', 'strict': 'mine'}."""
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"category_map entries look like 'sensitivity=category', got {item!r}")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class LogitArgs(MethodArgs):
    alpha: float | None = field(default=None, metadata={
        "help": "strength; default: the user's category's alpha from the category file"})
    default_category: str = field(default="moderate", metadata={
        "help": "category for users without a profile (strict, moderate, tolerant, or one of yours)"})
    category_map: str = field(default="", metadata={
        "help": "use another category for a sensitivity, e.g. 'tolerant=tolerant-inverted' (our extension)"})

    def validate(self) -> None:
        check_alpha(self.alpha)
        parse_category_map(self.category_map)


def logit_builder(kind: type[ContrastiveLogitSteering]
                  ) -> Callable[[LogitArgs, SteeringResources, str], SteeringMethod]:
    def build(args: LogitArgs, resources: SteeringResources, name: str) -> SteeringMethod:
        return kind(resources.categories(), resources.profiles(), default_category=args.default_category,
                    alpha=args.alpha, name=name, category_map=parse_category_map(args.category_map))

    return build
