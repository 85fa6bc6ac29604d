"""Rows of the cache: requests join and leave the running batch by slots, shared prefixes are spliced
in once, and each model keeps its own prefix cache."""

import gc

import torch

from steer_away import internals
from steer_away.chat import encode
from steer_away.decoding.kv_cache import RunningBatch, encode_rows, prefix_cache
from tests.conftest import make_tiny_lm


def prefilled(lm, texts):
    ids, mask = encode(lm, texts)
    cache = internals.new_kv_cache(lm.model, capacity=mask.shape[1])
    cache.set_mask(mask)
    with torch.inference_mode():
        internals.forward_step(lm.model, ids, cache.attention_mask(ids.shape[1], attend=False), cache)
    return cache


def test_requests_join_by_slots_and_a_leavers_slots_take_the_last_rows(tiny_lm):
    batch = RunningBatch(tiny_lm)
    three = prefilled(tiny_lm, ["hi", "thank you", "the quick brown fox"])
    batch.join(three, [0, 1, 2], [("a", 0), ("a", 1), ("b", 0)])
    batch.join(prefilled(tiny_lm, ["please be respectful and careful today"]), [0, 0], [("c", 0), ("d", 0)])
    assert batch.slots == {"a": [0, 1], "b": [2], "c": [3], "d": [4]} and batch.rows == 5
    version = batch.version
    d_keys = batch.cache.keys_values()[0][0][4].clone()
    batch.leave(["a"])
    # c and d moved into a's two slots; b stayed where it was
    assert batch.slots == {"b": [2], "c": [0], "d": [1]} and batch.owners == [("c", 0), ("d", 0), ("b", 0)]
    assert batch.version > version
    torch.testing.assert_close(batch.cache.keys_values()[0][0][1], d_keys, rtol=0, atol=0)
    batch.leave(["b", "c", "d"])
    assert batch.rows == 0 and batch.slots == {} and batch.owners == []


def test_grow_adds_one_attended_column(tiny_lm):
    batch = RunningBatch(tiny_lm)
    batch.join(prefilled(tiny_lm, ["hi", "thank you"]), [0, 1], [("a", 0), ("b", 0)])
    width = batch.width
    mask = batch.grow()
    assert mask.shape[1] == width + 1 and mask[:, -1].tolist() == [1, 1]


def test_rows_with_a_shared_prefix_start_from_its_keys(tiny_lm, tokenizer):
    head = [{"role": "system", "content": "be helpful and kind"}]
    texts = [tokenizer.apply_chat_template([*head, {"role": "user", "content": q}], add_generation_prompt=True,
                                           tokenize=False) for q in ("hi", "what is the capital of France?")]
    ids, mask, cache = encode_rows(tiny_lm, texts, [head, head])
    assert ids.shape[1] < mask.shape[1] and cache.width == mask.shape[1] - ids.shape[1]  # the prefix is cached
    whole = prefilled(tiny_lm, [texts[1]])
    with torch.inference_mode():
        internals.forward_step(tiny_lm.model, ids, cache.attention_mask(ids.shape[1], attend=False), cache)
    torch.testing.assert_close(cache.keys_values()[2][0][1, :, -whole.width:], whole.keys_values()[2][0][0],
                               rtol=1e-5, atol=1e-5)


def test_each_model_has_its_own_prefix_cache_gone_with_the_model(tiny_lm, tokenizer):
    other = make_tiny_lm("llama", tokenizer, seed=1)
    ids = tokenizer("be helpful", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        mine, theirs = prefix_cache(tiny_lm).get(tiny_lm, "be helpful", ids), prefix_cache(other).get(other, "be helpful", ids)
    assert prefix_cache(tiny_lm) is prefix_cache(tiny_lm) and prefix_cache(tiny_lm) is not prefix_cache(other)
    assert not torch.allclose(mine[0][0], theirs[0][0])  # same text, different model: never shared
    assert prefix_cache(tiny_lm).get(tiny_lm, "be helpful", ids) is mine  # computed once, then reused
    from steer_away.decoding import kv_cache

    count = len(kv_cache._PREFIX_CACHES)
    del other, theirs
    gc.collect()
    assert len(kv_cache._PREFIX_CACHES) == count - 1
