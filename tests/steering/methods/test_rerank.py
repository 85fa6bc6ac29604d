"""Best-of-N reranking: the choice rule, the samples it chooses among, seeds, composition and cancellation."""

import dataclasses

import pytest
import torch

from steer_away.chat import render_chat
from steer_away.decoding import DecodeEngine, DecodeLoop, DecodeRequest, GenerationConfig
from steer_away.decoding.engine import candidate_seed
from steer_away.errors import InputError
from steer_away.generation import generate
from steer_away.steering.framework.method import RowSteering, Unsteered
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.framework.targets import ToxicityTargets
from steer_away.steering.methods.logits import EADS
from steer_away.steering.methods.rerank import Rerank, RerankArgs
from steer_away.steering.registry import build_method
from tests.decoding.test_loop import CATS
from tests.steering.fake_scorer import CharShareScorer, profile

PROFILES = {"low": profile("low", 0.0, "strict"), "high": profile("high", 0.6, "tolerant")}
CONFIG = GenerationConfig(max_new_tokens=6, stop_on_eos=False)
PROMPT = "the quick brown fox"


def rerank(sampler=None, samples=4, guard=None, **kw):
    """A reranker; without the relevance guard unless asked (its own tests below)."""
    scorer = CharShareScorer()
    return Rerank(sampler or Unsteered(), scorer, ToxicityTargets(PROFILES, scorer, "rerank"), samples=samples,
                  guard=guard, **kw)


def test_the_answer_nearest_the_users_target_wins_ties_go_to_the_likelier():
    method = rerank()
    texts = ["xyz", "aaa", "axa", "xax"]  # TOXICITY 0, 1, 2/3, 1/3
    assert method.choose(RowSteering("low"), texts, [0, 0, 0, 0]) == 0
    assert method.choose(RowSteering("high"), texts, [0, 0, 0, 0]) == 2  # |2/3 − 0.6| is the smallest
    assert method.choose(RowSteering("nobody"), texts, [0, 0, 0, 0]) == 3  # the population target, 0.3
    assert method.choose(RowSteering("low"), ["xyz", "bcd", "xyz"], [-5.0, -1.0, -3.0]) == 1


def samples_by_hand(lm, method, row, first, n, temperature):
    """The n sampled answers the loop draws, one request each with the seeds it uses."""
    config = dataclasses.replace(CONFIG, do_sample=True, temperature=temperature)
    out = []
    for i in range(n):
        loop = DecodeLoop(lm)
        request = loop.add(DecodeRequest(PROMPT, method, row, config, torch.Generator().manual_seed(first + i),
                                          loglik=0.0))
        loop.run()
        out.append(request)
    return out


def test_it_returns_the_chosen_one_of_the_samples_it_would_draw_alone(tiny_lm):
    method = rerank(samples=5, temperature=1.3)
    row = RowSteering("high")
    (answer,) = generate(tiny_lm, [PROMPT], method=method, rows=[row], config=CONFIG)
    first = candidate_seed(DecodeRequest(PROMPT, method, row), method)
    drawn = samples_by_hand(tiny_lm, Unsteered(), row, first, 5, 1.3)
    texts = [r.result(tiny_lm).text for r in drawn]
    assert len(set(texts)) > 1  # the samples differ, so the choice matters
    assert answer.token_ids == drawn[method.choose(row, texts, [r.loglik for r in drawn])].tokens


def test_each_samples_log_likelihood_is_its_tokens_under_the_sampler(tiny_lm):
    """What ties are broken by: the sum of the sampler's log-probabilities (before temperature) of the
    tokens drawn, recomputed here with one teacher-forced pass."""
    (request,) = samples_by_hand(tiny_lm, Unsteered(), RowSteering(), 11, 1, 1.5)
    loop = DecodeLoop(tiny_lm)
    tracked = loop.add(DecodeRequest(PROMPT, Unsteered(), RowSteering(), dataclasses.replace(
        CONFIG, do_sample=True, temperature=1.5), torch.Generator().manual_seed(11), loglik=0.0))
    loop.run()
    assert tracked.tokens == request.tokens
    prompt = tiny_lm.tokenizer(render_chat(tiny_lm.tokenizer, [{"role": "user", "content": PROMPT}]),
                               add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + tracked.tokens])
    with torch.inference_mode():
        logp = torch.log_softmax(tiny_lm.model(ids).logits[0].float(), -1)
    expected = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(tracked.tokens))
    assert tracked.loglik == pytest.approx(expected, abs=1e-3)


def test_seeded_answers_repeat_and_do_not_depend_on_what_shares_the_batch(tiny_lm):
    method = rerank()
    prompts = [PROMPT, "thank you", "what is the capital of France?"]
    rows = [RowSteering("low"), RowSteering("high"), RowSteering("nobody")]
    together = generate(tiny_lm, prompts, method=method, rows=rows, config=CONFIG)
    again = generate(tiny_lm, prompts, method=method, rows=rows, config=CONFIG)
    assert [g.token_ids for g in together] == [g.token_ids for g in again]
    for prompt, row, got in zip(prompts, rows, together):
        assert generate(tiny_lm, [prompt], method=method, rows=[row], config=CONFIG)[0].token_ids == got.token_ids
    # a request's own seed decides its draws: the same seed, the same answer; another seed, other draws
    sampled = dataclasses.replace(CONFIG, do_sample=True)
    one = generate(tiny_lm, [PROMPT] * 2, method=method, rows=rows[:2], config=sampled, seeds=[3, 3])
    assert one[0].token_ids == generate(tiny_lm, [PROMPT], method=method, rows=rows[:1], config=sampled,
                                        seeds=[3])[0].token_ids
    # a sampled request without a seed draws afresh each time, as any sampled request does, and shares
    # its candidates with no one
    unseeded = DecodeRequest(PROMPT, method, rows[0], sampled)
    assert candidate_seed(unseeded, method) is None
    engine = DecodeEngine(tiny_lm)
    for _ in range(2):
        engine.add(DecodeRequest(PROMPT, method, rows[0], sampled))
    assert len(engine) == 8
    # a greedy request without a seed of its own starts from the method's seed, its prompt and the group its
    # sampler steers it in: not its user (the unsteered model steers everyone alike)
    start = {candidate_seed(DecodeRequest(p, m, r), m) for p in prompts[:2] for r in rows for m in (method, rerank(seed=1))}
    assert len(start) == 4
    per_user = rerank(EADS(CATS, PROFILES))  # EADS steers by the user's category: strict "low", tolerant "high"
    assert len({candidate_seed(DecodeRequest(PROMPT, per_user, r), per_user) for r in rows}) == 3


def test_users_choose_among_the_same_candidates_drawn_once(tiny_lm):
    """Three users of one prompt, the unsteered sampler: one set of four candidates, drawn once, each
    user choosing by their own target; the answers are those each user gets alone."""
    method = rerank()
    rows = [RowSteering("low"), RowSteering("high"), RowSteering("nobody")]
    engine = DecodeEngine(tiny_lm)
    requests = [engine.add(DecodeRequest(PROMPT, method, row, CONFIG)) for row in rows]
    assert len(engine) == 4  # one prompt's candidates, not one set per user
    engine.run()
    drawn = samples_by_hand(tiny_lm, Unsteered(), rows[0], candidate_seed(requests[0], method), 4, 0.7)
    texts = [r.result(tiny_lm).text for r in drawn]
    for request, row in zip(requests, rows):
        assert request.tokens == drawn[method.choose(row, texts, [r.loglik for r in drawn])].tokens
        assert request.tokens == generate(tiny_lm, [PROMPT], method=method, rows=[row], config=CONFIG)[0].token_ids
    assert len({tuple(r.tokens) for r in requests}) > 1  # the targets differ, and so do the choices


def test_a_prompts_candidates_share_one_prefill(tiny_lm):
    engine = DecodeEngine(tiny_lm)
    engine.add(DecodeRequest(PROMPT, rerank(samples=4), RowSteering("low"), CONFIG))
    engine.step()
    runner = engine.loop.runner
    assert engine.loop.batch.rows == runner.rows_joined == 4 and runner.rows_prefilled == 1  # four rows, fed once


def test_it_reranks_another_methods_samples(tiny_lm):
    eads = EADS(CATS, {})
    method = rerank(eads, samples=3)
    row = RowSteering("low")
    (answer,) = generate(tiny_lm, [PROMPT], method=method, rows=[row], config=CONFIG)
    drawn = samples_by_hand(tiny_lm, eads, row, candidate_seed(DecodeRequest(PROMPT, method, row), method), 3, 0.7)
    texts = [r.result(tiny_lm).text for r in drawn]
    assert answer.token_ids == drawn[method.choose(row, texts, [r.loglik for r in drawn])].tokens
    # scoring a context is the sampler's: reranking only chooses among finished answers
    conv = [[{"role": "user", "content": PROMPT}]]
    assert method.prepare(tiny_lm, conv, [row]).branches == eads.prepare(tiny_lm, conv, [row]).branches


def test_a_cancelled_request_cancels_its_samples_and_ends_once(tiny_lm):
    loop = DecodeEngine(tiny_lm)
    method = rerank(samples=3)
    request = loop.add(DecodeRequest(PROMPT, method, RowSteering("low"), GenerationConfig(max_new_tokens=50,
                                                                                           stop_on_eos=False)))
    assert len(loop) == 3
    loop.step()
    loop.cancel(request)
    ended = loop.step()
    assert ended == [request] and request.finish_reason == "cancelled" and loop.idle
    # a request that finishes is returned once, with its chosen answer, in the step its last sample ends
    streamed = []
    done = loop.add(DecodeRequest(PROMPT, method, RowSteering("low"), CONFIG, on_token=streamed.append))
    ended = []
    while not loop.idle:
        ended += loop.step()
    assert ended == [done] and streamed == done.tokens and len(done.tokens) == 6 and done.prompt_tokens > 0


def test_arguments_and_composition_are_checked(tiny_lm):
    with pytest.raises(InputError, match="candidates must be between 1 and 64"):
        RerankArgs(candidates=0)
    with pytest.raises(InputError, match="candidate_temperature must be between"):
        RerankArgs(candidate_temperature=0.0)
    resources = SteeringResources(tiny_lm, profiles=PROFILES, scorer=CharShareScorer())
    with pytest.raises(InputError, match="rerank cannot rerank its own samples"):
        build_method("rerank", {"over": "rerank"}, resources)
    with pytest.raises(InputError, match="unknown steering method 'nope'"):
        build_method("rerank", {"over": "nope"}, resources)
    built = build_method("rerank", {"over": "eads", "candidates": 2}, resources)
    assert isinstance(built, Rerank) and built.sampler.name == "eads" and built.samples == 2
    with pytest.raises(InputError, match="already picks among whole answers"):
        Rerank(built, CharShareScorer(), ToxicityTargets({}, CharShareScorer(), "r"))


def test_the_guard_keeps_only_candidates_that_keep_the_request():
    method = rerank(guard=0.5)
    texts = ["xyz", "aaa", "axa", "xax"]  # TOXICITY 0, 1, 2/3, 1/3; the "high" user's target is 0.6
    assert method.choose(RowSteering("high"), texts, [0.0] * 4) == 2  # no relevance measured: no guard
    relevance = [1.0, 1.2, 0.3, 0.9]  # the nearest candidate (2) is far less relevant than the best (1.2)
    assert method.choose(RowSteering("high"), texts, [0.0] * 4, relevance) == 3  # the nearest of 0, 1 and 3
    assert method.choose(RowSteering("low"), texts, [0.0] * 4, [0.1, 1.2, 1.0, 0.9]) == 3  # 0 is out; 1/3 nearest
    assert method.choose(RowSteering("low"), texts, [0.0] * 4, [float("nan")] * 4) == 0  # nothing measured
    assert rerank(guard=None).choose(RowSteering("high"), texts, [0.0] * 4, relevance) == 2
    with pytest.raises(InputError, match="guard must be between"):
        RerankArgs(guard=-1.0)


def test_the_engine_scores_sets_ending_together_in_one_call_and_hands_the_choice_its_score(tiny_lm, monkeypatch):
    from steer_away.decoding import engine as engine_module
    from steer_away.decoding.scoring import answer_scores

    calls = []
    real = engine_module.answer_scores

    def counted(lm, prompts, answers, *args, **kwargs):
        calls.append((len(answers), len(set(map(repr, prompts))), kwargs.get("relevance")))
        return real(lm, prompts, answers, *args, **kwargs)

    monkeypatch.setattr(engine_module, "answer_scores", counted)
    method = rerank(guard=0.5)
    engine = DecodeEngine(tiny_lm)
    rows = [(p, u) for p in (PROMPT, "hello there") for u in ("low", "high", "nobody")]
    requests = [engine.add(DecodeRequest(p, method, RowSteering(u), CONFIG)) for p, u in rows]
    engine.run()
    assert calls == [(8, 2, True)]  # six parents, two candidate sets ending in one step, judged in one call
    for (prompt, _), request in zip(rows, requests):
        result = request.result(tiny_lm)
        (alone,) = answer_scores(tiny_lm, [prompt], [result.text], relevance=True)
        assert result.score is not None and result.score.relevance == pytest.approx(alone.relevance, abs=1e-4)
    unguarded = DecodeEngine(tiny_lm)
    plain = unguarded.add(DecodeRequest(PROMPT, rerank(guard=None), RowSteering("low"), CONFIG))
    unguarded.run()
    assert len(calls) == 1 and plain.result(tiny_lm).score is None  # nothing asked, nothing measured


def test_an_override_its_sampler_refuses_names_rerank_first():
    """Issue 36 weak spot: rerank's row-override errors named only its sampler ('unsteered')."""
    from steer_away.steering.framework.arguments import RowOverrideError

    with pytest.raises(RowOverrideError, match="method 'rerank' samples its candidates with 'unsteered'") as caught:
        rerank(name="rerank").read_overrides({"category": "x"})
    assert caught.value.key == "category"
