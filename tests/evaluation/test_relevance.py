"""Relevance (PMI under the unsteered model, against an empty request) orders on-request answers above
off-request ones: checked on our 64 labelled pairs with the embedded model; the arithmetic on a tiny model."""

import json
import math

import pytest

from steer_away.decoding.scoring import NULL_REQUEST, AnswerScore, answer_scores
from steer_away.generation import continuation_logliks
from steer_away.resources import relevance_pairs_path

PAIRS = [json.loads(line) for line in relevance_pairs_path().read_text().splitlines() if line.strip()]


def test_the_labelled_set_is_what_its_readme_says():
    kinds = [p["kind"] for p in PAIRS]
    assert len(PAIRS) >= 60 and len({p["id"] for p in PAIRS}) == len(PAIRS)
    assert {k: kinds.count(k) for k in set(kinds)} == {"off_topic": 22, "refusal": 21, "evasive": 21}


def test_relevance_is_the_log_likelihood_gain_per_token_over_an_empty_request(tiny_lm):
    prompts, answers = ["the quick brown fox", "thank you", "the quick brown fox"], ["jumps over", "you are welcome", ""]
    scores = answer_scores(tiny_lm, prompts, answers, relevance=True)
    (own,), = continuation_logliks(tiny_lm, ["the quick brown fox"], [["jumps over"]])
    (null,), = continuation_logliks(tiny_lm, [NULL_REQUEST], [["jumps over"]])
    assert scores[0].relevance == scores[0].pmi == pytest.approx((own[0] - null[0]) / own[1], abs=1e-5)
    assert scores[0].perplexity == pytest.approx(math.exp(-own[0] / own[1]), rel=1e-5)
    assert math.isnan(scores[2].relevance) and math.isnan(scores[2].perplexity)  # an empty answer
    plain = answer_scores(tiny_lm, prompts[:1], answers[:1])[0]  # not asked for: perplexity alone
    assert math.isnan(plain.relevance) and plain.perplexity == pytest.approx(scores[0].perplexity, rel=1e-5)
    assert isinstance(scores[1], AnswerScore)
    (declined,) = answer_scores(tiny_lm, prompts[:1], ["I'm sorry, but I can't help with the quick brown fox."],
                                relevance=True)
    assert declined.relevance == min(declined.pmi, 0.0)  # a refusal addresses nothing, whatever its topic


def test_the_same_answer_to_the_same_prompt_is_scored_once(tiny_lm, monkeypatch):
    from steer_away.decoding import scoring

    fed = []
    real = scoring._logliks

    def counted(lm, contexts, answers, batch_size):
        fed.append(len(answers))
        return real(lm, contexts, answers, batch_size)

    monkeypatch.setattr(scoring, "_logliks", counted)
    scores = answer_scores(tiny_lm, ["hi", "hi", "yo"], ["a b", "a b", "a b"], relevance=True)
    assert fed == [2, 2] and scores[0] == scores[1] != scores[2]


@pytest.mark.slow
def test_relevance_orders_on_request_answers_first_on_the_labelled_set(embedded_lm):
    """The check the report's relevance column rests on: at least 90 % of pairs ordered right, overall and
    for each kind of off-request answer (fluent off-topic text, polite refusals, evasive filler)."""
    prompts = [p["prompt"] for p in PAIRS]
    scores = answer_scores(embedded_lm, prompts * 2, [p["on"] for p in PAIRS] + [p["off"] for p in PAIRS],
                           relevance=True, batch_size=32)
    right = [on.relevance > off.relevance for on, off in zip(scores[:len(PAIRS)], scores[len(PAIRS):])]
    by_kind = {kind: [ok for p, ok in zip(PAIRS, right) if p["kind"] == kind] for kind in ("off_topic", "refusal", "evasive")}
    print({kind: f"{sum(v)}/{len(v)}" for kind, v in by_kind.items()}, f"all {sum(right)}/{len(right)}")
    assert sum(right) / len(right) >= 0.9, [p["id"] for p, ok in zip(PAIRS, right) if not ok]  # measured: 60 of 64
    assert all(sum(v) / len(v) >= 0.8 for v in by_kind.values()), by_kind  # measured: 22/22, 20/21, 18/21
