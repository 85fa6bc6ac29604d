"""Multiple choice in cloze form (lm-evaluation-harness's `acc_norm`): the steered model is asked the
question with no options shown, each option's text is scored as its answer by its log-likelihood
divided by its length in characters, and the best-scoring option is its pick.

Small models that are at chance on the letter format (SmolLM2-135M: 24 % on our questions) can
show knowledge this way, so a cost of steering can show too. The question is encoded once under the
method's steering; its keys and values are then shared by the four options, whose tokens run in one
more pass (`generation.continuation_logliks`). Per position, the method combines its branches'
logits as it does when decoding, so the score is the log-probability the steered decoder gives
each option token; an option with a token the method rules out (ACD's plausibility cut-off)
scores −∞, and a question whose every option is ruled out counts as answered wrong (predicted −1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from steer_away.evaluation.utility.mmlu import MMLUPrediction, MMLUQuestion
from steer_away.generation import continuation_logliks
from steer_away.models import LanguageModel
from steer_away.steering.framework.method import RowSteering, SteeringMethod


def option_text(choice: str) -> str:
    """An option as the assistant would start its answer with it: first letter capitalised."""
    return choice[:1].upper() + choice[1:]


def normalised_scores(logliks: torch.Tensor, choices: Sequence[Sequence[str]]) -> torch.Tensor:
    """acc_norm's score: each option's log-likelihood over its length in characters, (questions, options)."""
    lengths = torch.tensor([[max(1, len(option_text(c))) for c in row] for row in choices], dtype=torch.float64)
    return logliks.double() / lengths


def picks(scores: torch.Tensor) -> list[int]:
    """The best option per question; −1 when no option has a finite score."""
    best = scores.argmax(-1).tolist()
    finite = torch.isfinite(scores).any(-1).tolist()
    return [int(b) if f else -1 for b, f in zip(best, finite)]


@torch.inference_mode()
def option_logliks(lm: LanguageModel, questions: Sequence[MMLUQuestion], method: SteeringMethod | None = None,
                   rows: Sequence[RowSteering] | None = None) -> torch.Tensor:
    """Log-likelihood of every option's tokens as the steered answer to its question, (questions, options)."""
    scored = continuation_logliks(lm, [q.question for q in questions],
                                  [[option_text(c) for c in q.choices] for q in questions], method, rows)
    return torch.tensor([[loglik for loglik, _ in options] for options in scored], dtype=torch.float64)


def cloze_predictions(lm: LanguageModel, questions: Sequence[MMLUQuestion], method: SteeringMethod | None = None,
                      rows: Sequence[RowSteering] | None = None, batch_size: int = 16) -> list[MMLUPrediction]:
    """The option each question's steered answer scores best by acc_norm, in batches of questions."""
    rows = list(rows) if rows is not None else [RowSteering()] * len(questions)
    # Questions with options of like length share a batch, so little of the options' pass is padding.
    order = sorted(range(len(questions)), key=lambda i: max(len(c) for c in questions[i].choices))
    picked: dict[int, int] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        logliks = option_logliks(lm, [questions[i] for i in chunk], method, [rows[i] for i in chunk])
        scores = normalised_scores(logliks, [questions[i].choices for i in chunk])
        picked.update(zip(chunk, picks(scores)))
    return [MMLUPrediction(picked[i], math.nan) for i in range(len(questions))]
