"""The refusal rule on answers labelled by hand: ours, and the embedded model's own from a demo run."""

import json

from steer_away.resources import refusal_labels_path
from steer_away.scoring.refusal import is_refusal

LABELLED = [json.loads(line) for line in refusal_labels_path().read_text().splitlines() if line.strip()]


def test_the_rule_agrees_with_the_labels():
    model = [r for r in LABELLED if r["source"] == "model"]
    assert len(LABELLED) >= 100 and len(model) >= 40 and sum(r["refusal"] for r in LABELLED) >= 50
    wrong = [r["answer"] for r in LABELLED if is_refusal(r["answer"]) != r["refusal"]]
    assert len(wrong) <= 0.05 * len(LABELLED), wrong  # at most 5 % wrong; today: none of 116


def test_it_reads_the_opening_only_and_knows_emphasis_from_refusal():
    assert is_refusal("As a chatbot, I don't have the ability to give opinions on this.")
    assert not is_refusal("I can't stress this enough: sleep matters. I can't wait for your results!")
    assert not is_refusal("Here is the plan. Step one. Step two. Step three. Sadly I can't help with the rest.")
    assert is_refusal("I'm sorry for the misunderstanding. I'm here to help you. However, I'm not a music-related AI.")
    assert not is_refusal("I'm not a chatbot, but I can certainly assist you with this recipe.")
