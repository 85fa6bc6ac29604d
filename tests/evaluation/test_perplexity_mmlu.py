import json
import math

import pytest
import torch

from steer_away.chat import render_chat
from steer_away.evaluation.mmlu import ANSWER_PREFIX, MMLUQuestion, letter_token_ids, load_mmlu, mmlu_predictions
from steer_away.evaluation.perplexity import answer_perplexities
from steer_away.steering.logits import EADS


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
    assert len(questions) == 40 and all(len(q.choices) == 4 for q in questions)
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
            logits = tiny_lm.model(ids).logits[0, -1]
        assert p == int(logits[letters].argmax())
    zero = EADS(alpha=0.0)
    assert mmlu_predictions(tiny_lm, qs, zero, batch_size=2) == preds
