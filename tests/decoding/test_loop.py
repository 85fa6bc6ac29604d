"""The decode loop: requests that join mid-flight, leave early, or mix methods answer as if alone."""

import pytest
import torch

from steer_away.decoding import DecodeLoop, DecodeRequest, GenerationConfig
from steer_away.generation import generate
from steer_away.profiles.build import UserProfile
from steer_away.steering.framework.categories import SteeringCategory
from steer_away.steering.framework.method import Capabilities, PreparedBatch, RowSteering, Unsteered
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.methods.logits import ACD, EADS, CategoryOverride
from steer_away.steering.vectors.vector import SteeringVector

LONG = GenerationConfig(max_new_tokens=24, stop_on_eos=False)
SHORT = GenerationConfig(max_new_tokens=6, stop_on_eos=False)
PROMPTS = ["the quick brown fox", "what is the capital of France?", "thank you",
           "please be respectful and careful with everyone you meet today and every day after"]
CATS = {
    "strict": SteeringCategory("strict", "please be polite and careful", "shut up idiot", alpha=2.0, beta=0.1,
                               expert_examples=(("thank you", "kind and careful"),)),
    "moderate": SteeringCategory("moderate", "be helpful", "stupid opinion", alpha=1.0, beta=0.2),
    "tolerant": SteeringCategory("tolerant", "the lazy dog", "kind and careful", alpha=0.5, beta=0.05),
}
PROFILES = {"s": UserProfile("s", ["TOXICITY"], [0.1], [0.2], 0.1, None, "strict", [0.0], 1, 1)}


def vector(seed, layers=(1, 2)):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({l: torch.randn(32, generator=g) * 3 for l in layers}, "tiny-random-llama", 32, 4)


CAA = ActivationSteering({"ann": vector(1), "bob": vector(2, layers=(2, 3))}, alpha=1.5, default=vector(0))
GATED = ActivationSteering(vector(3), alpha=2.0, gate=3)


def alone(lm, prompt, method=None, row=None, config=LONG):
    return generate(lm, [prompt], method=method, rows=[row or RowSteering()], config=config)[0].token_ids


def cache_rows(loop):
    return loop.batch.rows


def test_a_request_joining_mid_flight_starts_at_once_and_answers_as_if_alone(tiny_lm):
    loop = DecodeLoop(tiny_lm)
    first = loop.add(DecodeRequest(PROMPTS[0], CAA, RowSteering("ann"), LONG))
    for _ in range(5):
        loop.step()
    late = loop.add(DecodeRequest(PROMPTS[3], CAA, RowSteering("bob"), SHORT))
    finished_at = {}
    while not loop.idle:
        for request in loop.step():
            finished_at[id(request)] = (loop.steps, len(request.tokens))
    assert late.joined_at == 5 and first.joined_at == 0
    # the late request decoded while the first was still running, and ended long before it
    assert finished_at[id(late)][0] < finished_at[id(first)][0]
    assert late.tokens == alone(tiny_lm, PROMPTS[3], CAA, RowSteering("bob"), SHORT)
    assert first.tokens == alone(tiny_lm, PROMPTS[0], CAA, RowSteering("ann"))


def test_every_method_shares_steps_with_every_other(tiny_lm):
    """Unsteered, per-user CAA, gated CAA (its own step clock), EADS and ACD rows join at different
    steps of one loop; each answer equals the request run alone."""
    plan = [  # (step to join at, prompt, method, row)
        (0, PROMPTS[0], None, RowSteering()),
        (0, PROMPTS[1], EADS(CATS, PROFILES), RowSteering("s")),
        (2, PROMPTS[2], GATED, RowSteering()),
        (3, PROMPTS[3], ACD(CATS, PROFILES, alpha=3.0), RowSteering("t")),
        (4, PROMPTS[1], CAA, RowSteering("bob", alpha=-1.0)),
        (9, PROMPTS[2], EADS(CATS, PROFILES), RowSteering(overrides=CategoryOverride("tolerant"))),
    ]
    loop = DecodeLoop(tiny_lm)
    requests = []
    widest = 0
    for step in range(40):
        for when, prompt, method, row in plan:
            if when == step:
                requests.append(loop.add(DecodeRequest(prompt, method or Unsteered(), row, LONG)))
        if loop.idle and len(requests) == len(plan):
            break
        loop.step()
        widest = max(widest, len(loop.active))
    assert widest >= 4  # they really shared steps
    for (_, prompt, method, row), request in zip(plan, requests):
        assert request.tokens == alone(tiny_lm, prompt, method, row), request.method.name


def test_a_cancelled_request_frees_its_rows_at_the_next_step(tiny_lm):
    loop = DecodeLoop(tiny_lm)
    keep = loop.add(DecodeRequest(PROMPTS[0], EADS(CATS, PROFILES), RowSteering("s"), LONG))
    leave = loop.add(DecodeRequest(PROMPTS[3], EADS(CATS, PROFILES), RowSteering("s"), LONG))
    loop.step()
    loop.step()
    assert cache_rows(loop) == 6  # three branches each
    loop.cancel(leave)
    ended = loop.step()
    assert ended == [leave] and leave.finish_reason == "cancelled" and len(leave.tokens) == 2
    assert loop.active == [keep] and cache_rows(loop) == 3
    loop.run()
    assert keep.tokens == alone(tiny_lm, PROMPTS[0], EADS(CATS, PROFILES), RowSteering("s"))


def test_a_long_prompt_leaving_takes_its_padding_with_it(tiny_lm):
    loop = DecodeLoop(tiny_lm)
    short = loop.add(DecodeRequest(PROMPTS[2], config=LONG))
    loop.add(DecodeRequest(PROMPTS[3], config=GenerationConfig(max_new_tokens=3)))
    loop.step()
    padded = loop.batch.mask.shape[1]
    while len(loop.active) == 2:
        loop.step()
    assert loop.batch.mask.shape[1] < padded - 5 and bool(loop.batch.mask.all())  # only the short row's own tokens
    loop.run()
    assert short.tokens == alone(tiny_lm, PROMPTS[2])


def test_a_method_that_cannot_serve_a_request_fails_it_on_joining(tiny_lm):
    loop = DecodeLoop(tiny_lm)
    try:
        loop.add(DecodeRequest(PROMPTS[0], EADS(CATS, PROFILES), RowSteering(overrides=CategoryOverride("nope")), LONG))
    except ValueError as err:
        assert "nope" in str(err)
    else:
        raise AssertionError("an unknown category was accepted")
    assert loop.idle


def test_seeded_sampling_does_not_depend_on_company(tiny_lm):
    cfg = GenerationConfig(max_new_tokens=10, do_sample=True, temperature=1.5)
    solo = DecodeLoop(tiny_lm)
    a = solo.add(DecodeRequest(PROMPTS[1], config=cfg, generator=torch.Generator().manual_seed(7)))
    solo.run()
    busy = DecodeLoop(tiny_lm)
    busy.add(DecodeRequest(PROMPTS[0], config=cfg, generator=torch.Generator().manual_seed(1)))
    busy.step()
    b = busy.add(DecodeRequest(PROMPTS[1], config=cfg, generator=torch.Generator().manual_seed(7)))
    busy.run()
    assert a.tokens == b.tokens and len(a.tokens) > 0


LONG_PROMPT = " ".join(["please tell me about the weather in the mountains and the sea"] * 12)


class _FailsAfter(PreparedBatch):
    """Synthetic: a logit rule that raises at its third token (a scorer or rule failing mid-answer)."""

    capabilities = Capabilities(combines=True)

    def __init__(self, branches):
        super().__init__(branches)
        self.calls = 0

    def combine(self, logits):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("rule failed")
        return logits[0]


class FailingRule(Unsteered):
    capabilities = _FailsAfter.capabilities

    def prepare(self, lm, conversations, rows):
        return _FailsAfter([list(conversations)])


def test_chunked_prefill_keeps_running_rows_decoding_and_answers_as_if_alone(tiny_lm):
    loop = DecodeLoop(tiny_lm, prefill_chunk=96)
    running = loop.add(DecodeRequest(PROMPTS[0], CAA, RowSteering("ann"), LONG))
    loop.step()
    joiners = [loop.add(DecodeRequest(LONG_PROMPT, EADS(CATS, PROFILES), RowSteering("s"), SHORT)),
               loop.add(DecodeRequest(LONG_PROMPT + " why", CAA, RowSteering("bob"), SHORT))]
    grown = []
    while joiners[0].joined_at < 0:
        loop.step()
        grown.append(len(running.tokens))
    # several steps to prefill the joiners (8 rows of over 100 tokens at 96 tokens a step), and the
    # running request took a token in every one of them
    assert len(grown) > 5 and grown == list(range(2, 2 + len(grown)))
    loop.run()
    assert joiners[0].tokens == alone(tiny_lm, LONG_PROMPT, EADS(CATS, PROFILES), RowSteering("s"), SHORT)
    assert joiners[1].tokens == alone(tiny_lm, LONG_PROMPT + " why", CAA, RowSteering("bob"), SHORT)
    assert running.tokens == alone(tiny_lm, PROMPTS[0], CAA, RowSteering("ann"))


def test_a_request_cancelled_while_being_prefilled_never_joins(tiny_lm):
    loop = DecodeLoop(tiny_lm, prefill_chunk=64)
    stays = loop.add(DecodeRequest(PROMPTS[1], config=SHORT))
    leaves = loop.add(DecodeRequest(LONG_PROMPT, config=SHORT))
    loop.step()
    assert loop._prefilling[0].fed > 0  # one chunk of both is in the group's cache
    loop.cancel(leaves)
    assert loop.step() == [leaves] and leaves.tokens == []
    assert loop._prefilling[0].requests == [stays]  # its rows are cut out of the cache; the rest go on from there
    loop.run()
    assert stays.tokens == alone(tiny_lm, PROMPTS[1], config=SHORT) and loop.batch.rows == 0


def test_a_request_whose_rule_fails_ends_alone_and_its_batch_mates_run_on(tiny_lm):
    loop = DecodeLoop(tiny_lm)
    mates = [loop.add(DecodeRequest(PROMPTS[0], CAA, RowSteering("ann"), LONG)),
             loop.add(DecodeRequest(PROMPTS[2], EADS(CATS, PROFILES), RowSteering("s"), LONG))]
    bad = loop.add(DecodeRequest(PROMPTS[1], FailingRule(), RowSteering(), LONG))
    ended = []
    while not loop.idle:
        ended += loop.step()
    assert bad.finish_reason == "error" and len(bad.tokens) == 2 and str(bad.error) == "rule failed"
    assert ended[0] is bad  # it left at once; the others decoded to their end
    assert mates[0].tokens == alone(tiny_lm, PROMPTS[0], CAA, RowSteering("ann"))
    assert mates[1].tokens == alone(tiny_lm, PROMPTS[2], EADS(CATS, PROFILES), RowSteering("s"))
    with pytest.raises(RuntimeError, match="rule failed"):
        bad.result(tiny_lm)


def test_a_prefill_that_fails_for_one_joiner_fails_it_alone(tiny_lm, monkeypatch):
    loop = DecodeLoop(tiny_lm)
    good = loop.add(DecodeRequest(PROMPTS[0], config=SHORT))
    bad = loop.add(DecodeRequest(PROMPTS[3], config=SHORT))
    real = loop.runner.start_prefill

    def start_prefill(joining):
        if bad in joining:
            raise ValueError("synthetic: cannot encode this prompt")
        return real(joining)

    monkeypatch.setattr(loop.runner, "start_prefill", start_prefill)
    loop.run()
    assert bad.finish_reason == "error" and good.tokens == alone(tiny_lm, PROMPTS[0], config=SHORT)


def test_a_chunked_group_loses_a_cancelled_member_and_a_failing_one_without_harm_to_the_rest(tiny_lm, monkeypatch):
    loop = DecodeLoop(tiny_lm, prefill_chunk=64)
    stays = loop.add(DecodeRequest(LONG_PROMPT, CAA, RowSteering("ann"), SHORT))
    leaves = loop.add(DecodeRequest(LONG_PROMPT + " why", config=SHORT))
    breaks = loop.add(DecodeRequest(LONG_PROMPT + " how", EADS(CATS, PROFILES), RowSteering("s"), SHORT))
    loop.step()  # the three are one group, one chunk in
    assert [len(g.requests) for g in loop._prefilling] == [3]
    loop.cancel(leaves)
    real = loop.runner.advance_prefill

    def advance(group, chunk):  # synthetic: the pass fails while the EADS request is in it
        if breaks in group.requests and group.fed > 0:
            raise RuntimeError("synthetic: a pass over these rows fails")
        return real(group, chunk)

    monkeypatch.setattr(loop.runner, "advance_prefill", advance)
    loop.step()
    assert leaves.finish_reason == "cancelled" and breaks.finish_reason is None
    loop.run()
    assert breaks.finish_reason == "error" and "synthetic" in str(breaks.error)
    assert stays.tokens == alone(tiny_lm, LONG_PROMPT, CAA, RowSteering("ann"), SHORT)
    assert leaves.tokens == []


def test_offline_generation_raises_the_first_failure(tiny_lm):
    with pytest.raises(RuntimeError, match="rule failed"):
        generate(tiny_lm, PROMPTS[:3], method=FailingRule(), config=LONG)


def test_stop_text_hold_back():
    from steer_away.decoding import cut_at_stop, stop_prefix_length

    assert stop_prefix_length("He", ["Hello"]) == 2 and stop_prefix_length("Hel", ["Hello", "l"]) == 3
    assert stop_prefix_length("abc", ["Hello"]) == 0 and stop_prefix_length("", ["Hello"]) == 0
    assert stop_prefix_length("x. Th", [".", " The"]) == 3
    assert cut_at_stop("one. two. three", [". t", "two"]) == "one"


def test_a_request_cancelled_before_its_group_was_fed_leaves_the_rest_to_answer_as_if_alone(tiny_lm):
    loop = DecodeLoop(tiny_lm, prefill_chunk=64)
    first = loop.add(DecodeRequest(LONG_PROMPT, config=SHORT))
    loop.step()  # the first group is being fed; the next waits behind it
    leaves = loop.add(DecodeRequest(LONG_PROMPT + " why", config=SHORT))
    stays = loop.add(DecodeRequest(PROMPTS[1], CAA, RowSteering("bob"), SHORT))
    loop.step()
    assert [g.fed for g in loop._prefilling][1:] == [0] and len(loop._prefilling[1].requests) == 2
    loop.cancel(leaves)
    loop.run()
    assert leaves.tokens == [] and first.tokens == alone(tiny_lm, LONG_PROMPT, config=SHORT)
    assert stays.tokens == alone(tiny_lm, PROMPTS[1], CAA, RowSteering("bob"), SHORT)
