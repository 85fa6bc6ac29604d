"""Profile prompting: state the user's tolerance in a system prompt, optionally followed by a few
example exchanges in the matching register (in-context alignment in the style of URIAL; off by
default: on the embedded model the short examples make answers loop, see the category file).

No weights, activations or logits are touched: the model answers the user's conversation behind its
category's `prompt` and `prompt_examples` (the category file EADS reads). The leading messages are
the same for every row of a category, so their keys and values are computed once and shared. Its
cost is the longer context; its limit is how far a small model follows an instruction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from steer_away.chat import Conversation
from steer_away.steering.framework.by_category import (
    CategoryArgs,
    CategorySteering,
    parse_category_map,
    shared_head,
    with_context,
)
from steer_away.steering.framework.categories import CategoryConfigError, SteeringCategory
from steer_away.steering.framework.method import PreparedBatch, RowSteering, SteeringMethod
from steer_away.steering.framework.resources import SteeringResources

if TYPE_CHECKING:
    from steer_away.models import LanguageModel
    from steer_away.profiles import UserProfile


class ProfilePrompt(CategorySteering):
    """Answers behind the system prompt (and example exchanges) of the user's category."""

    name = "profile-prompt"

    def __init__(self, categories: Mapping[str, SteeringCategory] | None = None,
                 profiles: Mapping[str, UserProfile] | None = None, *, examples: bool = False,
                 default_category: str = "moderate", name: str | None = None,
                 category_map: Mapping[str, str] | None = None) -> None:
        super().__init__(categories, profiles, default_category=default_category, name=name,
                         category_map=category_map)
        used = {default_category, *self.category_map.values()} | {
            self.category_map.get(str(p.sensitivity), str(p.sensitivity)) for p in self.profiles.values()}
        lacking = sorted(c for c in used if c in self.categories and self.categories[c].prompt is None)
        if lacking:
            raise CategoryConfigError(f"{self.name}: category {lacking[0]!r} has no 'prompt' in the category file "
                                      "(profile prompting states the user's tolerance with it)")
        self.examples = examples

    def context(self, conversation: Conversation, category: SteeringCategory) -> Conversation:
        if category.prompt is None:
            raise CategoryConfigError(f"{self.name}: category {category.name!r} has no 'prompt' in the category file")
        return with_context(conversation, category.prompt, category.prompt_examples if self.examples else ())

    def prepare(self, lm: LanguageModel, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch:
        contexts = [self.context(c, self.row_category(row)) for c, row in zip(conversations, rows)]
        return PreparedBatch([contexts], [[shared_head(ctx, c) for ctx, c in zip(contexts, conversations)]])

    def answer_group(self, row: RowSteering) -> object:
        return self.row_category(row).name  # no strength: α does not change a prompt


@dataclass(frozen=True)
class PromptArgs(CategoryArgs):
    examples: bool = field(default=False, metadata={
        "help": "profile-prompt: put the category's example exchanges (prompt_examples) after the system prompt, URIAL-style"})


def prompt_builder() -> Callable[[PromptArgs, SteeringResources, str], SteeringMethod]:
    def build(args: PromptArgs, resources: SteeringResources, name: str) -> SteeringMethod:
        return ProfilePrompt(resources.categories(), resources.profiles(), examples=args.examples,
                             default_category=args.default_category, name=name,
                             category_map=parse_category_map(args.category_map))

    return build
