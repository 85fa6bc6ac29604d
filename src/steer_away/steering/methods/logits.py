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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from steer_away.chat import Conversation
from steer_away.errors import InputError
from steer_away.steering.framework.arguments import Strength
from steer_away.steering.framework.by_category import (
    CategoryArgs,
    CategoryOverride,
    CategorySteering,
    parse_category_map,
    shared_head,
    with_context,
)
from steer_away.steering.framework.categories import LOGIT_STRENGTH, SteeringCategory
from steer_away.steering.framework.method import Capabilities, PreparedBatch, RowSteering, SteeringMethod
from steer_away.steering.framework.resources import SteeringResources

__all__ = ["ACD", "EADS", "CategoryOverride", "LogitArgs", "branch_contexts", "logit_builder", "parse_category_map",
           "with_context"]

if TYPE_CHECKING:
    from steer_away.models import LanguageModel
    from steer_away.profiles import UserProfile


def branch_contexts(category: SteeringCategory, conversation: Conversation) -> dict[str, Conversation]:
    """The expert and anti-expert contexts of `category` around one conversation."""
    return {"expert": with_context(conversation, category.expert, category.expert_examples),
            "anti_expert": with_context(conversation, category.anti_expert, category.anti_expert_examples)}


def contrastive_mixture(logp: torch.Tensor, contrast: Sequence[float], alphas: torch.Tensor) -> torch.Tensor:
    """log p_base + α·Σ_i c_i·log p_i for (branches, batch, vocab) log-probabilities; `alphas` is (batch, 1).

    Branch 0 is the base; `contrast[i]` weighs branch i + 1.
    """
    if len(contrast) != logp.shape[0] - 1:
        raise InputError(f"{len(contrast)} contrast weights for {logp.shape[0] - 1} extra branches")
    mixed = contrast[0] * logp[1]
    for weight, branch in zip(contrast[1:], logp[2:]):
        mixed = mixed + weight * branch
    return logp[0] + alphas.to(logp.device) * mixed


def plausible_only(scores: torch.Tensor, base: torch.Tensor, log_betas: torch.Tensor) -> torch.Tensor:
    """Keep the tokens whose base log-probability is within log β of the top token's; −inf elsewhere."""
    cutoff = base.max(dim=-1, keepdim=True).values + log_betas.to(base.device)
    return scores.masked_fill(base < cutoff, float("-inf"))


class _ContrastiveBatch(PreparedBatch):
    capabilities = Capabilities(combines=True)

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


class ContrastiveLogitSteering(CategorySteering):
    """Base of EADS and ACD: extra branches behind category prompts, mixed by `contrast` weights.

    Each row's category is picked from its user's sensitivity (unknown users: `default_category`).
    Subclasses say which prompts make the extra branches, their weights, and whether the
    plausibility cut-off applies.
    """

    contrast: tuple[float, ...] = ()
    plausibility_cutoff = False
    capabilities = _ContrastiveBatch.capabilities

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
        super().__init__(categories, profiles, default_category=default_category, name=name,
                         category_map=category_map)
        LOGIT_STRENGTH.check(alpha)
        self.alpha = alpha

    def extra_branches(self, conversation: Conversation, category: SteeringCategory) -> list[Conversation]:
        raise NotImplementedError

    def prepare(self, lm: LanguageModel, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch:
        cats = [self.row_category(row) for row in rows]
        alphas = []
        for row, cat in zip(rows, cats):
            LOGIT_STRENGTH.check(row.alpha)
            alphas.append(row.alpha if row.alpha is not None else self.alpha if self.alpha is not None else cat.alpha)
        extra = [self.extra_branches(c, cat) for c, cat in zip(conversations, cats)]
        branches = [list(conversations)] + [[row[i] for row in extra] for i in range(len(self.contrast))]
        # Each extra branch's context starts with its category's system prompt and example exchanges,
        # the same for every row of that category: encoded once, shared by all of them.
        prefixes: list[list[Conversation | None]] = [[None] * len(conversations)]
        for branch in branches[1:]:
            prefixes.append([shared_head(context, conv) for context, conv in zip(branch, conversations)])
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


@dataclass(frozen=True)
class LogitArgs(CategoryArgs):
    strength: ClassVar[Strength | None] = LOGIT_STRENGTH
    alpha: float | None = field(default=None, metadata={
        "help": "strength; default: the user's category's alpha from the category file"})


def logit_builder(kind: type[ContrastiveLogitSteering]
                  ) -> Callable[[LogitArgs, SteeringResources, str], SteeringMethod]:
    def build(args: LogitArgs, resources: SteeringResources, name: str) -> SteeringMethod:
        return kind(resources.categories(), resources.profiles(), default_category=args.default_category,
                    alpha=args.alpha, name=name, category_map=parse_category_map(args.category_map))

    return build
