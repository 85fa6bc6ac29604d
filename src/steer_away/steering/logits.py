"""Logit steering with expert and anti-expert branches of the same frozen model (EADS, ACD).

The expert branch is the user's conversation behind a system prompt for the language to move
toward, the anti-expert branch behind one for the language to avoid. All branches decode in one
batched forward pass per step (see generation.py); this module only says which branches to run
and how to combine their next-token scores. Scores are combined as log-probabilities, so α has
the same meaning whatever the branches' logit scales: log p_base + α·(log p_expert − log p_anti)
for EADS, and log p_base − α·log p_anti over the base's plausible tokens for ACD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from steer_away.files import read_structured
from steer_away.steering.base import Conversation, PreparedBatch, RowSteering, SteeringMethod

KINDS = ("eads", "acd")


class CategoryConfigError(ValueError):
    """A steering-category file that is missing a category or has a bad value; names file and field."""


@dataclass(frozen=True)
class SteeringCategory:
    name: str
    expert: str
    anti_expert: str
    alpha: float
    beta: float = 0.1


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
    missing = [name for name in required if name not in raw]
    if missing:
        raise CategoryConfigError(f"{path}: missing category {missing[0]!r} (needs {', '.join(required)})")
    out = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise CategoryConfigError(f"{path}: [{name}] must be a table")
        for key in ("expert", "anti_expert"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise CategoryConfigError(f"{path}: [{name}].{key} must be a non-empty string")
        for key, default in (("alpha", None), ("beta", 0.1)):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CategoryConfigError(f"{path}: [{name}].{key} must be a finite number, got {value!r}")
        beta = float(table.get("beta", 0.1))
        if not 0 < beta <= 1:
            raise CategoryConfigError(f"{path}: [{name}].beta must be in (0, 1], got {beta}")
        out[name] = SteeringCategory(name=name, expert=table["expert"], anti_expert=table["anti_expert"],
                                     alpha=float(table["alpha"]), beta=beta)
    return out


def with_system_prompt(conversation: Conversation, system: str) -> Conversation:
    """The conversation behind `system`, merged with a system message it already has."""
    if conversation and conversation[0].get("role") == "system":
        return [{"role": "system", "content": f"{system}\n\n{conversation[0]['content']}"}, *conversation[1:]]
    return [{"role": "system", "content": system}, *conversation]


class _LogitBatch(PreparedBatch):
    def __init__(self, branches: list[list[Conversation]], kind: str, alphas: torch.Tensor,
                 log_betas: torch.Tensor) -> None:
        super().__init__(branches)
        self.kind = kind
        self.alphas = alphas[:, None]  # (batch, 1)
        self.log_betas = log_betas[:, None]

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)
        alphas = self.alphas.to(logp.device)
        if self.kind == "eads":
            base, expert, anti = logp[0], logp[1], logp[2]
            return base + alphas * (expert - anti)
        base, anti = logp[0], logp[1]
        scores = base - alphas * anti
        cutoff = base.max(dim=-1, keepdim=True).values + self.log_betas.to(logp.device)
        return scores.masked_fill(base < cutoff, float("-inf"))


class LogitSteering(SteeringMethod):
    """EADS or ACD, with each row's category picked from its user's sensitivity."""

    def __init__(
        self,
        kind: str,
        categories: Mapping[str, SteeringCategory] | None = None,
        profiles: Mapping[str, object] | None = None,
        *,
        default_category: str = "moderate",
        alpha: float | None = None,
        name: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"logit steering kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.categories = dict(categories) if categories is not None else load_categories()
        if default_category not in self.categories:
            raise CategoryConfigError(f"default category {default_category!r} is not among "
                                      f"{sorted(self.categories)}")
        if alpha is not None and not math.isfinite(alpha):
            raise ValueError(f"alpha must be finite, got {alpha}")
        self.profiles = dict(profiles or {})
        self.default_category = default_category
        self.alpha = alpha
        self.name = name or kind
        self.personalised = bool(self.profiles)

    def category_for(self, user_id: str | None) -> SteeringCategory:
        profile = self.profiles.get(user_id) if user_id is not None else None
        if profile is None:
            return self.categories[self.default_category]
        sensitivity = getattr(profile, "sensitivity", None)
        if sensitivity not in self.categories:
            raise CategoryConfigError(f"user {user_id} has sensitivity {sensitivity!r}, which has no steering "
                                      f"category (have {sorted(self.categories)})")
        return self.categories[sensitivity]

    def prepare(self, lm: object, conversations: Sequence[Conversation],
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
        base = list(conversations)
        anti = [with_system_prompt(c, cat.anti_expert) for c, cat in zip(conversations, cats)]
        if self.kind == "eads":
            expert = [with_system_prompt(c, cat.expert) for c, cat in zip(conversations, cats)]
            branches = [base, expert, anti]
        else:
            branches = [base, anti]
        return _LogitBatch(branches, self.kind, torch.tensor(alphas), torch.tensor([math.log(c.beta) for c in cats]))
