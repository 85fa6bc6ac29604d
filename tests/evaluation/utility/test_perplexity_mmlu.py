import json
import math

import pytest
import torch

from steer_away.chat import render_chat
from steer_away.decoding.scoring import answer_scores
from steer_away.evaluation.utility.mmlu import ANSWER_PREFIX, MMLUQuestion, letter_token_ids, load_mmlu, mmlu_predictions
from steer_away.steering.methods.logits import EADS


def answer_perplexities(lm, prompts, answers, batch_size=8):
    return [s.perplexity for s in answer_scores(lm, prompts, answers, batch_size=batch_size)]


def test_perplexity_matches_a_manual_computation(tiny_lm):
    prompts, answers = ["the quick brown fox", "thank you"], ["jumps over the lazy dog", "you are kind"]
    got = answer_perplexities(tiny_lm, prompts, answers, batch_size=2)
    for prompt, answer, value in zip(prompts, answers, got):
        text = render_chat(tiny_lm.tokenizer, [{"role": "user", "content": prompt}])
        n_prompt = len(tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = tiny_lm.tokenizer(text + answer, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logp = torch.log_softmax(tiny_lm.model(ids).logits[0, :-1].float(), -1)
        nll = -logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]][n_prompt - 1:]
        assert value == pytest.approx(math.exp(nll.mean().item()), rel=1e-4)
    assert math.isnan(answer_perplexities(tiny_lm, ["hi"], [""])[0])


def test_fixture_and_loader_errors(tmp_path):
    questions = load_mmlu()
    assert len(questions) == 240 and all(len(q.choices) == 4 for q in questions)
    assert len({q.question_id for q in questions}) == 240 and len({q.question for q in questions}) == 240
    assert all(len(set(q.choices)) == 4 for q in questions)
    assert [sum(q.answer == k for q in questions[:40]) for k in range(4)] == [10] * 4  # the first 40 balance too
    assert load_mmlu(limit=5)[4].question_id == questions[4].question_id
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "q1", "question": "x?", "choices": ["a", "b"], "answer": 0}) + "\n")
    with pytest.raises(ValueError, match="q1: 'choices' must list 4"):
        load_mmlu(bad)
    bad.write_text(json.dumps({"id": "q2", "question": "x?", "choices": list("abcd"), "answer": "E"}) + "\n")
    with pytest.raises(ValueError, match="q2: 'answer'"):
        load_mmlu(bad)


def test_predictions_are_argmax_over_letters(tiny_lm):
    qs = [MMLUQuestion(f"q{i}", "test", f"question {i}?", ("a", "b", "c", "d"), i % 4) for i in range(5)]
    preds = mmlu_predictions(tiny_lm, qs, batch_size=2)
    letters = letter_token_ids(tiny_lm.tokenizer)
    for q, p in zip(qs, preds):
        text = render_chat(tiny_lm.tokenizer, [{"role": "user", "content": q.prompt()}]) + ANSWER_PREFIX
        ids = tiny_lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = tiny_lm.model(ids).logits[0, -1].float()
        assert p.predicted == int(logits[letters].argmax())
        assert p.letter_mass == pytest.approx(float(torch.softmax(logits, -1)[letters].sum()), rel=1e-4)
    zero = EADS(alpha=0.0)
    assert [p.predicted for p in mmlu_predictions(tiny_lm, qs, zero, batch_size=2)] == [p.predicted for p in preds]


def test_plausibility_cut_off_never_erases_the_letters(tiny_lm):
    """ACD's cut-off applied over the whole vocabulary used to set every letter to −inf (argmax then
    said 'A' for everything); among the four letters alone the base's best letter always survives."""
    from steer_away.generation import candidate_scores
    from steer_away.steering.methods.logits import ACD

    qs = [MMLUQuestion(f"q{i}", "test", f"question {i}?", ("a", "b", "c", "d"), i % 4) for i in range(8)]
    letters = letter_token_ids(tiny_lm.tokenizer)
    acd = ACD(alpha=50.0)
    scores, _ = candidate_scores(tiny_lm, [q.prompt() for q in qs], letters, acd, answer_prefix=ANSWER_PREFIX)
    assert scores.shape == (8, 4)
    assert torch.isfinite(scores).any(-1).all()
    base, _ = candidate_scores(tiny_lm, [q.prompt() for q in qs], letters, answer_prefix=ANSWER_PREFIX)
    # the letter the base prefers is always among the plausible ones
    assert torch.isfinite(scores.gather(1, base.argmax(-1, keepdim=True))).all()


def test_a_model_that_always_says_c_scores_the_keys_share_of_c(tiny_lm):
    questions = load_mmlu()
    share_c = sum(q.answer == 2 for q in questions) / len(questions)
    assert share_c == 0.25  # the shipped key is balanced: 60 questions per letter
    c = letter_token_ids(tiny_lm.tokenizer)[2]
    bias = torch.zeros(tiny_lm.model.lm_head.out_features)
    bias[c] = 1e4
    handle = tiny_lm.model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    try:
        preds = mmlu_predictions(tiny_lm, questions, batch_size=8)
    finally:
        handle.remove()
    assert {p.predicted for p in preds} == {2}
    assert sum(p.predicted == q.answer for p, q in zip(preds, questions)) / len(questions) == share_c
    assert all(p.letter_mass == pytest.approx(1.0) for p in preds)


def test_answers_sharing_a_prompt_score_as_they_would_alone(tiny_lm):
    prompts = ["roast my roommate", "roast my roommate", "tell me a fact", "roast my roommate"]
    answers = ["he never cleans", "", "the sea is salty and deep", "you leave dishes everywhere all week"]
    together = answer_perplexities(tiny_lm, prompts, answers, batch_size=4)
    alone = [answer_perplexities(tiny_lm, [p], [a])[0] for p, a in zip(prompts, answers)]
    assert math.isnan(together[1]) and math.isnan(alone[1])
    assert [v for i, v in enumerate(together) if i != 1] == pytest.approx([v for i, v in enumerate(alone) if i != 1],
                                                                          rel=1e-4)
