"""Cloze scoring against a reference: each option's log-likelihood computed by running the whole
text (context + option) through every branch without a cache, combining branches per position."""

import contextlib
import math

import pytest
import torch

from steer_away import internals
from steer_away.chat import render_chat
from steer_away.decoding import encode_prepared
from steer_away.evaluation.utility.cloze import cloze_predictions, normalised_scores, option_logliks, option_text, picks
from steer_away.evaluation.utility.mmlu import MMLUQuestion
from steer_away.generation import continuation_logliks
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.methods.logits import ACD, EADS
from steer_away.steering.vectors.vector import SteeringVector

QUESTIONS = [MMLUQuestion(f"q{i}", "test", "what is thing" + " really" * (3 * i) + f" number {i}?",
                          ("a red apple", "the sea", "blue", "a small and quiet village"), i % 4) for i in range(5)]


def random_vector(seed):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({l: torch.randn(32, generator=g) * 3 for l in (1, 2)}, model_id="tiny-random-llama",
                          hidden_size=32, num_layers=4)


def reference_logliks(lm, method, questions, rows):
    """Whole texts, one question at a time, each under its own row's steering (hooks on every position)."""
    out = torch.zeros(len(questions), 4, dtype=torch.float64)
    for qi, q in enumerate(questions):
        conversation = [{"role": "user", "content": q.question}]
        single = method.prepare(lm, [conversation], [rows[qi]]) if method else None
        branches = [b[0] for b in single.branches] if single else [conversation]
        for oi, choice in enumerate(q.choices):
            option = lm.tokenizer(option_text(choice), add_special_tokens=False)["input_ids"]
            per_branch = []
            for branch_conversation in branches:
                context = lm.tokenizer(render_chat(lm.tokenizer, branch_conversation),
                                       add_special_tokens=False)["input_ids"]
                ids = torch.tensor([context + option])
                with torch.inference_mode(), (single.scope(lm.model) if single else contextlib.nullcontext()):
                    logits = lm.model(ids).logits[0].float()
                per_branch.append(logits[len(context) - 1:len(context) - 1 + len(option)])
            stacked = torch.stack(per_branch)  # (branches, option tokens, vocab)
            total = 0.0
            for j, token in enumerate(option):
                step = stacked[:, j][:, None, :]  # one row
                scores = single.combine(step) if single else step[0]
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


def test_per_user_activation_steering_on_rows_of_different_lengths_matches_the_reference(tiny_lm):
    vectors = {"u0": random_vector(0), "u1": random_vector(1)}
    method = ActivationSteering(vectors, alpha=2.0, default=random_vector(2))
    rows = [RowSteering("u0"), RowSteering("u1"), RowSteering("u0", alpha=0.5), RowSteering("other"), RowSteering()]
    got = option_logliks(tiny_lm, QUESTIONS, method, rows)
    assert torch.allclose(got, reference_logliks(tiny_lm, method, QUESTIONS, rows), atol=1e-3)
    assert not torch.allclose(got, option_logliks(tiny_lm, QUESTIONS), atol=1e-3)


def test_a_gated_method_scores_continuations_as_its_decoder_steers_them(tiny_lm):
    """gate='prefill' edits only the prompt's pass: the reference steers the prefill, then feeds the
    continuation one decode step at a time without edits (the decoder's own path)."""
    method = ActivationSteering(random_vector(3), alpha=4.0, gate="prefill")
    prompt, continuation = "tell me about the sea", "it is deep and very blue today"
    (got,), = continuation_logliks(tiny_lm, [prompt], [[continuation]], method)
    tokens = tiny_lm.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    prepared = method.prepare(tiny_lm, [[{"role": "user", "content": prompt}]], [RowSteering()])
    ids, mask, cache = encode_prepared(tiny_lm, prepared, [render_chat(tiny_lm.tokenizer, prepared.branches[0][0])])
    with torch.inference_mode():
        with prepared.scope(tiny_lm.model):
            logits = internals.forward_step(tiny_lm.model, ids, mask, cache)
        total = 0.0
        for token in tokens:
            total += float(torch.log_softmax(logits.float(), -1)[0, token])
            mask = torch.cat([mask, mask.new_ones((1, 1))], -1)
            logits = internals.forward_step(tiny_lm.model, torch.tensor([[token]]), mask, cache)
    assert got[1] == len(tokens) and got[0] == pytest.approx(total, abs=1e-3)
    (everywhere,), = continuation_logliks(tiny_lm, [prompt], [[continuation]],
                                          ActivationSteering(random_vector(3), alpha=4.0))
    assert everywhere[0] != pytest.approx(total, abs=1e-2)  # the gate made a difference here


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
