"""Cache surgery and the prefix cache: rows join and leave, padding goes with them, prefixes are per model."""

import gc

import torch

from steer_away import internals
from steer_away.chat import encode
from steer_away.decoding.kv_cache import RunningBatch, prefix_cache
from tests.conftest import make_tiny_lm


def prefilled(lm, texts):
    ids, mask = encode(lm, texts)
    cache = internals.new_kv_cache(lm.model)
    with torch.inference_mode():
        internals.forward_step(lm.model, ids, mask, cache)
    return RunningBatch(lm, cache, mask)


def keys(batch):
    return internals.kv_layers(batch.cache)[0][0]


def test_appended_rows_are_left_padded_to_one_width_and_keep_their_keys(tiny_lm):
    short, long = prefilled(tiny_lm, ["hi"]), prefilled(tiny_lm, ["please be respectful and careful today"])
    short_keys, short_width = keys(short).clone(), short.width
    short.append(long.cache, long.mask)
    assert short.rows == 2 and short.width == long.width > short_width
    assert short.mask[0, :-short_width].sum() == 0  # the short row's new columns are masked padding
    torch.testing.assert_close(keys(short)[0, :, -short_width:], short_keys[0], rtol=0, atol=0)
    torch.testing.assert_close(keys(short)[1], keys(long)[0], rtol=0, atol=0)


def test_keeping_rows_drops_columns_that_are_padding_for_all_that_stay(tiny_lm):
    batch = prefilled(tiny_lm, ["hi", "please be respectful and careful today", "thank you"])
    own = prefilled(tiny_lm, ["thank you"])
    batch.keep([2])
    assert batch.rows == 1 and batch.width == own.width and bool(batch.mask.all())
    torch.testing.assert_close(keys(batch), keys(own), rtol=1e-6, atol=1e-6)


def test_grow_adds_one_unmasked_column(tiny_lm):
    batch = prefilled(tiny_lm, ["hi", "thank you"])
    width = batch.width
    mask = batch.grow()
    assert batch.width == width + 1 and mask[:, -1].tolist() == [1, 1]


def test_each_model_has_its_own_prefix_cache_gone_with_the_model(tiny_lm, tokenizer):
    other = make_tiny_lm("llama", tokenizer, seed=1)
    ids = tokenizer("be helpful", add_special_tokens=False)["input_ids"]
    mine, theirs = prefix_cache(tiny_lm).get(tiny_lm, "be helpful", ids), prefix_cache(other).get(other, "be helpful", ids)
    assert prefix_cache(tiny_lm) is prefix_cache(tiny_lm) and prefix_cache(tiny_lm) is not prefix_cache(other)
    assert not torch.allclose(mine[0][0], theirs[0][0])  # same text, different model: never shared
    assert prefix_cache(tiny_lm).get(tiny_lm, "be helpful", ids) is mine  # computed once, then reused
    from steer_away.decoding import kv_cache

    count = len(kv_cache._PREFIX_CACHES)
    del other, theirs
    gc.collect()
    assert len(kv_cache._PREFIX_CACHES) == count - 1
