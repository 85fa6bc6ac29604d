"""Classifier-guided decoding: at each step the base model's top-k next tokens are re-weighted by
how far the toxicity scorer puts the answer they would make from the user's preferred TOXICITY.

    score(t) = log p(t) − α · |tox(answer + t) − target(user)|   for t in the top k,

and every other token keeps log p(t) minus the largest penalty among the top k (judged no better
than the worst of them, never ruled out, so any continuation keeps a finite score). `window` is the
cheaper approximation: the scorer judges only the last `window` tokens and the candidate instead of
the whole answer (0: the whole answer, exact). The scorer runs uncached on k texts per row and step,
in one batch per row: its speed sets the method's cost (bench/decode.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from steer_away.chat import Conversation
from steer_away.errors import InputError
from steer_away.scoring.base import ToxicityScorer
from steer_away.steering.framework.arguments import MethodArgs, Strength
from steer_away.steering.framework.method import Capabilities, PreparedBatch, RowSteering, SteeringMethod
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.framework.targets import ToxicityTargets, check_judge

if TYPE_CHECKING:
    from steer_away.models import LanguageModel

GUIDED_STRENGTH = Strength("alpha", minimum=0.0)  # a negative λ would reward distance from the target
MAX_TOP_K = 256  # each is a scorer text per row and step


class _GuidedBatch(PreparedBatch):
    capabilities = Capabilities(rescores=True)

    def __init__(self, conversations: list[Conversation], tokenizer: Any, scorer: ToxicityScorer,
                 targets: torch.Tensor, alphas: torch.Tensor, top_k: int, window: int) -> None:
        super().__init__([conversations])
        self.tokenizer, self.scorer = tokenizer, scorer
        self.targets, self.alphas = targets, alphas  # (batch,)
        self.top_k, self.window = top_k, window

    def rescore(self, scores: torch.Tensor, answers: Sequence[Sequence[int]]) -> torch.Tensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        top = logp.topk(min(self.top_k, logp.shape[-1]), dim=-1)
        texts = []
        for answer, candidates in zip(answers, top.indices.tolist()):
            kept = list(answer[-self.window:]) if self.window else list(answer)
            texts += [self.tokenizer.decode([*kept, token], skip_special_tokens=True) for token in candidates]
        toxicity = torch.as_tensor(self.scorer.score(texts)[:, 0], dtype=torch.float32).view(top.indices.shape)
        penalty = self.alphas[:, None] * (toxicity - self.targets[:, None]).abs()
        out = logp - penalty.max(dim=-1, keepdim=True).values.to(logp.device)
        return out.scatter(-1, top.indices, top.values - penalty.to(logp.device))


class ClassifierGuided(SteeringMethod):
    """Re-weights the top-k next tokens toward the user's preferred TOXICITY, by the scorer's judgement."""

    name = "guided"
    capabilities = _GuidedBatch.capabilities

    def __init__(self, scorer: ToxicityScorer, targets: ToxicityTargets, *, alpha: float = 20.0, top_k: int = 10,
                 window: int = 0, name: str | None = None) -> None:
        GUIDED_STRENGTH.check(alpha)
        self.scorer, self.targets = scorer, targets
        self.alpha, self.top_k, self.window = alpha, top_k, window
        self.personalised = targets.personal
        if name is not None:
            self.name = name

    def prepare(self, lm: LanguageModel, conversations: Sequence[Conversation],
                rows: Sequence[RowSteering]) -> PreparedBatch:
        for row in rows:
            GUIDED_STRENGTH.check(row.alpha)
        targets = torch.tensor([self.targets.of(row.user_id) for row in rows])
        alphas = torch.tensor([self.alpha if row.alpha is None else float(row.alpha) for row in rows])
        return _GuidedBatch(list(conversations), lm.tokenizer, self.scorer, targets, alphas, self.top_k, self.window)


@dataclass(frozen=True)
class GuidedArgs(MethodArgs):
    strength: ClassVar[Strength | None] = GUIDED_STRENGTH
    alpha: float = field(default=20.0, metadata={
        "help": "strength λ: log-probability taken per unit of TOXICITY distance to the user's target"})
    top_k: int = field(default=10, metadata={"help": "guided: next tokens the scorer judges at each step"})
    window: int = field(default=0, metadata={
        "help": "guided: judge only the last N answer tokens and the candidate (cheaper); 0: the whole answer"})
    judge: str = field(default="", metadata={
        "help": "toxicity scorer that judges the text; default: the run's (the one profiles were built with)"})

    def validate(self) -> None:
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise InputError(f"top_k must be between 1 and {MAX_TOP_K}, got {self.top_k}")
        if self.window < 0:
            raise InputError(f"window must be >= 0 (0: the whole answer), got {self.window}")
        check_judge(self.judge)


def guided_builder() -> Callable[[GuidedArgs, SteeringResources, str], SteeringMethod]:
    def build(args: GuidedArgs, resources: SteeringResources, name: str) -> SteeringMethod:
        scorer = resources.scorer(args.judge)
        # Every step asks about k new texts: the SQLite cache would only grow, so the backend is asked directly.
        direct = getattr(scorer, "inner", scorer)
        return ClassifierGuided(direct, ToxicityTargets(resources.profiles(), scorer, name,
                                                          resources.profiles_scored_by()), alpha=args.alpha,
                                top_k=args.top_k, window=args.window, name=name)

    return build
