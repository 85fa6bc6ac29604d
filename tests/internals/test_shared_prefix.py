"""Cascade attention: each shared prefix read once for its rows, merged with the rows' own columns, gives
what one attention over every row's whole columns gives (and exactly that for rows without a prefix)."""

import pytest
import torch

from steer_away.decoding import DecodeLoop, DecodeRequest, GenerationConfig
from steer_away.internals.shared_prefix import SharedPrefix, attend, prefix_plan
from steer_away.profiles.build import UserProfile
from steer_away.steering.framework.method import RowSteering, Unsteered
from steer_away.steering.methods.logits import EADS
from steer_away.steering.methods.prompting import ProfilePrompt
from tests.decoding.test_loop import CATS, PROMPTS


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_attention_equals_attention_over_whole_rows(dtype):
    gen = torch.Generator().manual_seed(0)
    rows, heads, kv_heads, dim, own, length = 7, 4, 2, 8, 7, 6
    prefixes = [SharedPrefix([(torch.randn(1, kv_heads, length, dim, generator=gen),
                               torch.randn(1, kv_heads, length, dim, generator=gen))]) for _ in range(3)]
    # two prefixes of two rows each, one of a single row (read as part of its row), two rows without
    which = [prefixes[0], None, prefixes[1], prefixes[0], None, prefixes[1], prefixes[2]]
    query = torch.randn(rows, heads, 1, dim, generator=gen)
    # the cache's columns: [prefix copy (or padding)][own tokens], with some own padding masked
    keys = torch.randn(rows, kv_heads, length + own, dim, generator=gen)
    values = torch.randn(rows, kv_heads, length + own, dim, generator=gen)
    mask = torch.ones(rows, length + own, dtype=torch.long)
    mask[:, length:length + 2] = 0  # padding before the own tokens
    for r, prefix in enumerate(which):
        if prefix is None:
            mask[r, :length] = 0
        else:
            keys[r, :, :length], values[r, :, :length] = prefix.layers[0][0][0], prefix.layers[0][1][0]
    query, keys, values = query.to(dtype), keys.to(dtype), values.to(dtype)
    prefixes = [SharedPrefix([(k.to(dtype), v.to(dtype)) for k, v in p.layers]) for p in prefixes]
    which = [prefixes[0], None, prefixes[1], prefixes[0], None, prefixes[1], prefixes[2]]
    whole = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask[:, None, None].bool(),
                                                             scale=0.3, enable_gqa=True)
    plan = prefix_plan([(p, length) if p is not None else None for p in which], mask, start=0)
    assert plan is not None and [(count, prefix) for count, prefix in plan.groups] == [(2, prefixes[0]), (2, prefixes[1])]
    assert plan.prefixed.tolist() == [0, 3, 2, 5] and plan.own_start == 0  # the lone prefix's row reads it whole
    merged = attend(query, keys, values, 0, plan, plan.own_mask(mask, 0, query.dtype), 0, 0.3)
    assert merged.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(merged, whole, rtol=tolerance, atol=tolerance)
    plain = torch.nn.functional.scaled_dot_product_attention(query[[1, 4, 6]], keys[[1, 4, 6]], values[[1, 4, 6]],
                                                             attn_mask=mask[[1, 4, 6], None, None].bool(), scale=0.3,
                                                             enable_gqa=True)
    assert torch.equal(merged[[1, 4, 6]], plain)  # no shared prefix: exactly one attention over its columns


def test_a_prefix_that_starts_one_row_only_is_read_with_that_row():
    prefix = SharedPrefix([(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))])
    assert prefix_plan([(prefix, 2), None], torch.ones(2, 3), 0) is None


def test_no_prefix_no_plan():
    assert prefix_plan([None, None], torch.ones(2, 3), 0) is None


PROFILES = {"s": UserProfile("s", ["TOXICITY"], [0.1], [0.2], 0.1, None, "strict", [0.0], 1, 1)}


@pytest.mark.parametrize("method", [EADS(CATS, PROFILES), ProfilePrompt(CATS | {
    name: cat.__class__(**{**cat.__dict__, "prompt": f"be {name}"}) for name, cat in CATS.items()}, PROFILES)],
    ids=["eads", "profile-prompt"])
def test_decoding_rows_with_prefixes_reads_them_once_and_answers_as_the_models_own_forward(tiny_lm, method, monkeypatch):
    """Rows that joined at different steps (their prefix copies in different columns), beside a row
    without one: the fast step's cascade attention answers as the model's own forward over whole rows."""

    def run():
        loop = DecodeLoop(tiny_lm)
        requests = []
        for i, prompt in enumerate(PROMPTS):
            requests.append(loop.add(DecodeRequest(prompt, method if i != 1 else Unsteered(), RowSteering("s"),
                                                   GenerationConfig(max_new_tokens=10, stop_on_eos=False))))
            loop.step()
        plans = loop.batch.cache.prefix_plan()
        loop.run()
        return [r.tokens for r in requests], plans

    fast, plan = run()
    assert plan is not None and plan.groups  # the steps did read prefixes once
    monkeypatch.setenv("STEER_AWAY_FAST_DECODE", "0")  # every step the model's own forward, whole rows
    assert run()[0] == fast
