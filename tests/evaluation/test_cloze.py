"""Cloze scoring against a reference: each option's log-likelihood computed by running the whole
text (context + option) through every branch without a cache, combining branches per position."""

import math

import pytest
import torch

from steer_away.chat import render_chat
from steer_away.evaluation.cloze import cloze_predictions, normalised_scores, option_logliks, option_text, picks
from steer_away.evaluation.mmlu import MMLUQuestion
from steer_away.steering.base import RowSteering
from steer_away.steering.logits import ACD, EADS

QUESTIONS = [MMLUQuestion(f"q{i}", "test", f"what is thing {i}?",
                          ("a red apple", "the sea", "blue", "a small and quiet village"), i % 4) for i in range(5)]


def reference_logliks(lm, method, questions, rows):
    prepared = method.prepare(lm, [[{"role": "user", "content": q.question}] for q in questions], rows) \
        if method else None
    out = torch.zeros(len(questions), 4, dtype=torch.float64)
    for qi, q in enumerate(questions):
        for oi, choice in enumerate(q.choices):
            option = lm.tokenizer(option_text(choice), add_special_tokens=False)["input_ids"]
            branches = prepared.branches if prepared else [[[{"role": "user", "content": q.question}]] * len(questions)]
            per_branch = []
            for branch in branches:
                context = lm.tokenizer(render_chat(lm.tokenizer, branch[qi]), add_special_tokens=False)["input_ids"]
                ids = torch.tensor([context + option])
                with torch.inference_mode():
                    logits = lm.model(ids).logits[0].float()
                per_branch.append(logits[len(context) - 1:len(context) - 1 + len(option)])
            stacked = torch.stack(per_branch)  # (branches, option tokens, vocab)
            total = 0.0
            for j, token in enumerate(option):
                step = stacked[:, j][:, None, :]  # one row
                if prepared is None:
                    scores = step[0]
                else:
                    single = method.prepare(lm, [[{"role": "user", "content": q.question}]], [rows[qi]])
                    scores = single.combine(step)
                total += float(torch.log_softmax(scores.float(), -1)[0, token])
            out[qi, oi] = total
    return out


def test_unsteered_logliks_match_whole_text_forward_passes(tiny_lm):
    got = option_logliks(tiny_lm, QUESTIONS)
    want = reference_logliks(tiny_lm, None, QUESTIONS, None)
    assert torch.allclose(got, want, atol=1e-3)


def test_branch_methods_combine_per_position_like_the_reference(tiny_lm):
    method = EADS(alpha=1.5)
    rows = [RowSteering()] * len(QUESTIONS)
    got = option_logliks(tiny_lm, QUESTIONS, method, rows)
    want = reference_logliks(tiny_lm, method, QUESTIONS, rows)
    assert torch.allclose(got, want, atol=1e-3)
    assert not torch.allclose(got, option_logliks(tiny_lm, QUESTIONS), atol=1e-3)  # steering changed something


def test_acc_norm_divides_by_characters_and_a_question_with_no_possible_option_is_wrong():
    logliks = torch.tensor([[-4.0, -4.0, -9.0, -9.0], [-math.inf] * 4])
    choices = [("ab", "abcd", "a", "abcdefghi"), ("w", "x", "y", "z")]
    scores = normalised_scores(logliks, choices)
    assert scores[0].tolist() == pytest.approx([-2.0, -1.0, -9.0, -1.0])
    assert picks(scores) == [1, -1]  # the first of equal best; none finite -> -1


def test_predictions_follow_the_logliks_and_keep_question_order(tiny_lm):
    preds = cloze_predictions(tiny_lm, QUESTIONS, batch_size=2)
    want = picks(normalised_scores(option_logliks(tiny_lm, QUESTIONS), [q.choices for q in QUESTIONS]))
    assert [p.predicted for p in preds] == want
    acd = cloze_predictions(tiny_lm, QUESTIONS, ACD(alpha=5.0), batch_size=3)
    assert all(-1 <= p.predicted < 4 for p in acd)
