"""Whole-answer search outside the loop: parents wait on candidates that the loop runs as ordinary
requests, shared by parents that would draw the same, and let go of together."""

import pytest

from steer_away.decoding import DecodeEngine, DecodeLoop, DecodeRequest, GenerationConfig
from steer_away.generation import generate
from steer_away.steering.framework.method import RowSteering
from tests.decoding.test_loop import FailingRule
from tests.steering.methods.test_rerank import CONFIG, PROMPT, rerank

LONG = GenerationConfig(max_new_tokens=30, stop_on_eos=False)


def test_the_loop_itself_refuses_a_request_that_chooses_among_answers(tiny_lm):
    with pytest.raises(TypeError, match="DecodeEngine"):
        DecodeLoop(tiny_lm).add(DecodeRequest(PROMPT, rerank(), RowSteering("low"), CONFIG))


def test_a_parent_that_leaves_lets_the_others_keep_their_shared_candidates(tiny_lm):
    method = rerank()
    engine = DecodeEngine(tiny_lm)
    stays = engine.add(DecodeRequest(PROMPT, method, RowSteering("high"), LONG))
    leaves = engine.add(DecodeRequest(PROMPT, method, RowSteering("low"), LONG))
    assert len(engine) == 4  # one set of candidates for both
    engine.step()
    engine.cancel(leaves)
    assert engine.step() == [leaves] and leaves.finish_reason == "cancelled"
    assert len(engine) == 4  # the candidates run on for the parent that stayed
    ended = []
    while not engine.idle:
        ended += engine.step()
    assert ended == [stays] and stays.tokens == generate(tiny_lm, [PROMPT], method=method, rows=[RowSteering("high")],
                                                         config=LONG)[0].token_ids


def test_when_the_last_parent_leaves_its_candidates_stop(tiny_lm):
    engine = DecodeEngine(tiny_lm)
    parents = [engine.add(DecodeRequest(PROMPT, rerank(samples=3), RowSteering(user), LONG)) for user in ("low", "high")]
    engine.step()
    for parent in parents:
        engine.cancel(parent)
    assert set(engine.step()) == set(parents)
    engine.step()
    assert engine.idle and len(engine.loop) == 0


def test_a_failing_candidate_fails_every_parent_waiting_on_it(tiny_lm):
    engine = DecodeEngine(tiny_lm)
    sampler = FailingRule()  # its rule raises at its third token
    parents = [engine.add(DecodeRequest(PROMPT, rerank(sampler), RowSteering(user), CONFIG)) for user in ("low", "nobody")]
    ended = []
    while not engine.idle:
        ended += engine.step()
    assert set(ended) == set(parents)
    assert all(p.finish_reason == "error" and "rule failed" in str(p.error) for p in parents)


def test_a_sampled_request_draws_its_candidates_at_its_own_temperature(tiny_lm):
    """Issue 36: rerank ignored the request's temperature; a greedy request leaves it to the method."""

    from steer_away.decoding import DecodeEngine, DecodeRequest, GenerationConfig

    method = rerank()
    for config, expected in ((GenerationConfig.sampled(1.5, max_new_tokens=4), 1.5),
                             (CONFIG, method.answer_choice().temperature)):
        engine = DecodeEngine(tiny_lm)
        engine.add(DecodeRequest(PROMPT, method, config=config, generator=None))
        drawn = {r.config.temperature for r in engine.pending + engine.active}
        assert drawn == {expected}
