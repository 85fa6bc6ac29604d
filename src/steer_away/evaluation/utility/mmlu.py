"""Zero-shot MMLU: the steered model's log-likelihood of the letters A-D as the answer's first token."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from steer_away.errors import InputError
from steer_away.generation import candidate_scores
from steer_away.models import LanguageModel
from steer_away.resources import mmlu_fixture_path
from steer_away.steering.framework.method import RowSteering, SteeringMethod

LETTERS = ("A", "B", "C", "D")
# Opening the assistant's turn so that the next token is the letter. With "The correct option is "
# SmolLM2-135M put 0.6 % of its probability on A-D (digits came first) and its "answers" were
# position bias; after "…is (" the letters carry 99.6 % (measured on our 40 questions, min 99.3 %).
ANSWER_PREFIX = "The correct option is ("


@dataclass(frozen=True)
class MMLUQuestion:
    question_id: str
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # index into choices

    def prompt(self) -> str:
        options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, self.choices))
        subject = self.subject.replace("_", " ")
        return (f"The following is a multiple choice question about {subject}.\n\n{self.question}\n{options}\n"
                "Answer with the letter of the correct option.")


def _question(row: dict, qid: str, source: str) -> MMLUQuestion:
    choices = row.get("choices")
    answer = row.get("answer")
    if not isinstance(choices, (list, tuple)) or len(choices) != 4:
        raise InputError(f"{source} question {qid}: 'choices' must list 4 options")
    if isinstance(answer, str) and answer in LETTERS:
        answer = LETTERS.index(answer)
    if not isinstance(answer, int) or not 0 <= answer < 4:
        raise InputError(f"{source} question {qid}: 'answer' must be 0-3 or A-D, got {answer!r}")
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        raise InputError(f"{source} question {qid}: 'question' is missing")
    return MMLUQuestion(qid, str(row.get("subject", "general")), row["question"],
                        tuple(str(c) for c in choices), answer)  # type: ignore[arg-type]


def load_mmlu(source: str | Path | None = None, *, subjects: Sequence[str] = ("all",), split: str = "test",
              limit: int | None = None) -> list[MMLUQuestion]:
    """Our MMLU-format fixture (default), a local JSONL file, or `cais/mmlu` from the hub ('hub')."""
    questions: list[MMLUQuestion] = []
    if source is None or str(source) != "hub":
        path = Path(source) if source is not None else mmlu_fixture_path()
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise InputError(f"{path} line {line_no} is not valid JSON: {err.msg}") from err
                    questions.append(_question(row, str(row.get("id", line_no)), str(path)))
    else:
        from datasets import load_dataset

        for subject in subjects:
            for index, row in enumerate(load_dataset("cais/mmlu", subject, split=split)):
                questions.append(_question(row, f"{row.get('subject', subject)}/{split}/{index}", "cais/mmlu"))
    return questions[:limit] if limit is not None else questions


def letter_token_ids(tokenizer: object) -> list[int]:
    ids = []
    for letter in LETTERS:
        encoded = tokenizer(letter, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        if not encoded:
            raise InputError(f"tokenizer has no token for {letter!r}")
        ids.append(encoded[0])
    return ids


@dataclass(frozen=True)
class MMLUPrediction:
    predicted: int  # option index
    letter_mass: float  # probability the steered model put on A-D at all (low: the letters say little)


@torch.inference_mode()
def mmlu_predictions(lm: LanguageModel, questions: Sequence[MMLUQuestion], method: SteeringMethod | None = None,
                     rows: Sequence[RowSteering] | None = None, batch_size: int = 8) -> list[MMLUPrediction]:
    """Zero-shot: the option whose letter the steered model scores highest, among the four letters only."""
    letters = letter_token_ids(lm.tokenizer)
    rows = list(rows) if rows is not None else [RowSteering()] * len(questions)
    out: list[MMLUPrediction] = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        scores, mass = candidate_scores(lm, [q.prompt() for q in chunk], letters, method,
                                        rows[start:start + batch_size], answer_prefix=ANSWER_PREFIX)
        out.extend(MMLUPrediction(int(p), float(m)) for p, m in zip(scores.argmax(-1).tolist(), mass.tolist()))
    return out


def content_digest(questions: Sequence[MMLUQuestion]) -> str:
    """Names the question set and the scoring format, so a changed set or format is never reused."""

    payload = json.dumps([ANSWER_PREFIX, [(q.question_id, q.question, q.choices, q.answer) for q in questions]])
    return hashlib.sha1(payload.encode()).hexdigest()[:12]
