"""Utility under steering: multiple-choice accuracy in one of two formats, chosen by name.

`cloze` (lm-evaluation-harness's acc_norm, cloze.py) is the default: small models can answer in it.
`letter` (the letter A-D as the answer's first token, mmlu.py) is MMLU's usual zero-shot format,
for models large enough to follow it; at 135M parameters it sits at chance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from steer_away.errors import InputError
from steer_away.evaluation.utility.cloze import cloze_predictions
from steer_away.evaluation.utility.mmlu import MMLUPrediction, MMLUQuestion, content_digest, mmlu_predictions
from steer_away.models import LanguageModel
from steer_away.steering.framework.method import RowSteering, SteeringMethod

Predictor = Callable[..., list[MMLUPrediction]]


@dataclass(frozen=True)
class UtilityFormat:
    predict: Predictor
    rows_per_question: int  # forward-pass rows one question takes (cloze: one per option)


UTILITY_FORMATS: dict[str, UtilityFormat] = {"cloze": UtilityFormat(cloze_predictions, 4),
                                             "letter": UtilityFormat(mmlu_predictions, 1)}
DEFAULT_FORMAT = "cloze"


def check_format(name: object, where: str = "utility") -> str:
    if name not in UTILITY_FORMATS:
        raise InputError(f"{where} is {name!r}; choose one of {', '.join(UTILITY_FORMATS)}")
    return str(name)


def utility_predictions(format_name: str, lm: LanguageModel, questions: Sequence[MMLUQuestion],
                        method: SteeringMethod | None, rows: Sequence[RowSteering], batch_size: int
                        ) -> list[MMLUPrediction]:
    """Each question's pick under the steering, in the named format; `batch_size` counts forward-pass
    rows (a cloze question scores its four options as four rows)."""
    chosen = UTILITY_FORMATS[check_format(format_name)]
    return chosen.predict(lm, questions, method, rows, batch_size=max(1, batch_size // chosen.rows_per_question))


def utility_digest(format_name: str, questions: Sequence[MMLUQuestion]) -> str:
    """Names the question set and the format, so results in another format are never reused."""
    return hashlib.sha1(f"{format_name}:{content_digest(questions)}".encode()).hexdigest()[:12]
