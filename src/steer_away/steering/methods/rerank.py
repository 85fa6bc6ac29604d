"""Best-of-N reranking: sample N whole answers, keep the one whose TOXICITY is closest to the user's
preferred TOXICITY (ties: the one the sampler found likelier, by the summed log-probability of its
tokens; the sampler is the base model itself by default, so that is the base model's likelihood).

Unguarded, the nearest answer is often the one that leaves the request (on a provocative prompt, the
sample that drifts to something else is the least toxic). The guard keeps the choice to the
candidates whose relevance to the request (the unsteered model's PMI of the answer given its prompt,
a refusal counting at most 0: `decoding.scoring.answer_scores`) is within `guard` nats per token of
the most relevant candidate's; the default comes from the trade-off curve `bench/rerank_guard.py`
measures on prompts outside the evaluation set.

The N answers are drawn from another registered method (`over`, the unsteered model by default), so
reranking composes with any of them (EADS + rerank is `over = "eads"`); the decode engine draws them
as N ordinary requests, once for every request that would draw the same. Scoring a context (utility,
lm-eval log-likelihoods) is the sampler's: a reranker only chooses among finished answers. Its cost is
N answers, N scorer calls and, with the guard, 2N relevance passes per set of candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from steer_away.chat import Conversation
from steer_away.errors import InputError
from steer_away.scoring.base import ToxicityScorer
from steer_away.steering.framework.arguments import MethodArgs, RowOverrideError, RowOverrides
from steer_away.steering.framework.method import AnswerChoice, Capabilities, PreparedBatch, RowSteering, SteeringMethod
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.framework.targets import ToxicityTargets, check_judge

if TYPE_CHECKING:
    from steer_away.models import LanguageModel

MAX_SAMPLES = 64
# nats per token: the default guard, from the trade-off curve bench/rerank_guard.py measured on 40 prompts outside
# the demo's evaluation set x its 9 users (README, the method table): unguarded −69 % TOXICITY distance with
# relevance −0.09 nats/token [−0.23, +0.05] and 5 % of picks refusals; at 1.0 −66 % [−83, −40] with relevance
# −0.04 [−0.19, +0.11] and 1 % refusals; at 0.5 only −31 % [−67, +30].
GUARD = 1.0


class Rerank(SteeringMethod, AnswerChoice):
    """Keeps, of `samples` answers drawn from `sampler`, the one nearest the user's preferred TOXICITY among
    those whose relevance to the request is within `guard` of the most relevant one's."""

    name = "rerank"
    capabilities = Capabilities(chooses_answers=True)

    def __init__(self, sampler: SteeringMethod, scorer: ToxicityScorer, targets: ToxicityTargets, *,
                 samples: int = 4, temperature: float = 0.7, seed: int = 0, guard: float | None = GUARD,
                 name: str | None = None) -> None:
        if sampler.capabilities.chooses_answers:
            raise InputError(f"{sampler.name} already picks among whole answers; rerank its sampler instead")
        self.guard = guard
        self.wants_relevance = guard is not None
        self.sampler, self.scorer, self.targets = sampler, scorer, targets
        # its answers are chosen among the sampler's; contexts are scored as the sampler decodes them
        self.capabilities = dataclasses.replace(sampler.capabilities, chooses_answers=True)
        self.samples, self.temperature, self.seed = samples, temperature, seed
        self.personalised = targets.personal or sampler.personalised
        self.row_overrides = sampler.row_overrides
        if name is not None:
            self.name = name

    def answer_choice(self) -> AnswerChoice:
        return self

    def prepare(self, lm: LanguageModel, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch:
        return self.sampler.prepare(lm, conversations, rows)

    def read_overrides(self, raw: Mapping[str, object]) -> RowOverrides | None:
        """The sampler's per-row choices; an error names this method first (it named only the sampler)."""
        try:
            return self.sampler.read_overrides(raw)
        except RowOverrideError as err:
            raise RowOverrideError(err.key, f"method '{self.name}' samples its candidates with "
                                            f"'{self.sampler.name}': {err}") from None

    def users_without_own(self, users: Iterable[str]) -> list[str]:
        return self.sampler.users_without_own(users)

    def answer_group(self, row: RowSteering) -> Hashable:
        """Users with one target and one sampler group are answered alike."""
        return (self.targets.of(row.user_id), self.sampler.answer_group(row))

    def choose(self, row: RowSteering, texts: Sequence[str], logliks: Sequence[float],
               relevance: Sequence[float] | None = None) -> int:
        """Nearest the user's target among the candidates that keep the request (all of them without a
        guard, or when no candidate's relevance could be measured); ties: the likelier under the sampler."""
        toxicity = np.asarray(self.scorer.score(list(texts)))[:, 0]
        distance = np.abs(toxicity - self.targets.of(row.user_id))
        eligible = list(range(len(texts)))
        if self.guard is not None and relevance is not None and any(np.isfinite(relevance)):
            floor = float(np.nanmax(relevance)) - self.guard
            eligible = [i for i in eligible if np.isfinite(relevance[i]) and relevance[i] >= floor]
        return min(eligible, key=lambda i: (float(distance[i]), -float(logliks[i])))


@dataclass(frozen=True)
class RerankArgs(MethodArgs):
    candidates: int = field(default=4, metadata={
        "help": "rerank: answers sampled per request, N (the cost is about N answers)"})
    candidate_temperature: float = field(default=0.7, metadata={"help": "rerank: sampling temperature of the N answers"})
    over: str = field(default="unsteered", metadata={
        "help": "rerank: the registered method whose samples are reranked, with its default arguments (e.g. eads)"})
    judge: str = field(default="", metadata={
        "help": "toxicity scorer that judges the text; default: the run's (the one profiles were built with)"})
    candidate_seed: int = field(default=0, metadata={
        "help": "rerank: seeds the draws of a request without a seed of its own (with its prompt and sampler group)"})
    guard: float | None = field(default=GUARD, metadata={
        "help": "rerank: choose only among candidates whose relevance to the request (nats/token, the unsteered "
                "model's PMI) is within this of the most relevant one's; none: no guard"})

    def validate(self) -> None:
        if self.guard is not None and not 0 <= self.guard <= 100:
            raise InputError(f"guard must be between 0 and 100 nats per token (or none), got {self.guard}")
        if not 1 <= self.candidates <= MAX_SAMPLES:
            raise InputError(f"candidates must be between 1 and {MAX_SAMPLES}, got {self.candidates}")
        if not 1e-3 <= self.candidate_temperature <= 100:
            raise InputError(f"candidate_temperature must be between 0.001 and 100, got {self.candidate_temperature}")
        check_judge(self.judge)

    def wrapped(self) -> str:
        return self.over


Builder = Callable[[str, Mapping[str, object] | None, SteeringResources], SteeringMethod]


def rerank_builder(build_other: Builder) -> Callable[[RerankArgs, SteeringResources, str], SteeringMethod]:
    """`build_other` builds the method whose samples are reranked (the registry passes its own builder)."""

    def build(args: RerankArgs, resources: SteeringResources, name: str) -> SteeringMethod:
        if args.over == name:
            raise InputError(f"{name} cannot rerank its own samples (over = {args.over!r})")
        sampler = build_other(args.over, None, resources)
        scorer = resources.scorer(args.judge)
        targets = ToxicityTargets(resources.profiles(), scorer, name, resources.profiles_scored_by())
        return Rerank(sampler, scorer, targets, samples=args.candidates, temperature=args.candidate_temperature,
                      seed=args.candidate_seed, guard=args.guard, name=name)

    return build
