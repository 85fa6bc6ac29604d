"""BatchCache: keys written in place, the same logits as transformers' own cache, rows joining and
leaving without copying the others, buffers growing by chunks."""

import torch
from transformers import DynamicCache

from steer_away import internals
from steer_away.chat import encode
from steer_away.internals import BatchCache
from steer_away.internals.kv import GROW_COLUMNS

TEXTS = ["hi", "please be respectful and careful today", "thank you"]


def prefilled(lm, texts, extra=8):
    ids, mask = encode(lm, texts)
    cache = internals.new_kv_cache(lm.model, capacity=mask.shape[1] + extra)
    cache.set_mask(mask)
    with torch.inference_mode():
        logits = internals.forward_step(lm.model, ids, cache.attention_mask(ids.shape[1], attend=False), cache)
    return cache, logits


def test_decoding_writes_in_place_and_gives_the_dynamic_caches_logits(tiny_lm):
    """Prefill and six greedy steps with our cache and with transformers' DynamicCache: the same
    logits at every step, while our buffers stay where they are (no copy per token)."""
    ids, mask = encode(tiny_lm, TEXTS)
    ours = internals.new_kv_cache(tiny_lm.model, capacity=mask.shape[1] + 16)
    ours.set_mask(mask)
    theirs = DynamicCache(config=tiny_lm.model.config)
    model = tiny_lm.model
    with torch.inference_mode():
        a = internals.forward_step(model, ids, ours.attention_mask(ids.shape[1], attend=False), ours)
        b = internals.forward_step(model, ids, mask, theirs)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        buffer = ours._keys[0].data_ptr()
        their_mask = mask
        for _ in range(6):
            token = a.argmax(-1, keepdim=True)
            a = internals.forward_step(model, token, ours.attention_mask(1), ours)
            their_mask = torch.cat([their_mask, torch.ones_like(token)], -1)
            b = internals.forward_step(model, token, their_mask, theirs)
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ours._keys[0].data_ptr() == buffer  # written in place
    torch.testing.assert_close(ours.keys_values()[0][0], theirs.layers[0].keys, rtol=1e-6, atol=1e-6)
    assert torch.equal(ours.mask(), their_mask)


def test_joiners_are_right_aligned_and_the_rows_already_there_keep_their_keys(tiny_lm):
    running, _ = prefilled(tiny_lm, ["hi"])
    wide, _ = prefilled(tiny_lm, ["please be respectful and careful today", "thank you"])
    before = running.keys_values()[0][0].clone()
    narrow_width = running.width
    running.append(wide, [1, 0, 1])  # a row may join twice (one prefill serving two identical rows)
    assert running.rows == 4 and running.width == wide.width > narrow_width
    keys, mask = running.keys_values()[0][0], running.mask()
    assert mask[0, :-narrow_width].sum() == 0  # the first row's new columns are masked padding
    torch.testing.assert_close(keys[0, :, -narrow_width:], before[0], rtol=0, atol=0)
    torch.testing.assert_close(keys[1], wide.keys_values()[0][0][1], rtol=0, atol=0)
    torch.testing.assert_close(keys[3], keys[1], rtol=0, atol=0)
    assert torch.equal(mask[2], wide.mask()[0]) and torch.equal(mask[1], wide.mask()[1])


def test_leavers_slots_take_the_last_rows_and_unused_columns_go(tiny_lm):
    cache, _ = prefilled(tiny_lm, [*TEXTS, "the quick brown fox"])
    keys = cache.keys_values()[0][0].clone()
    moves = cache.remove([0, 1])
    assert moves == [(2, 0), (3, 1)] and cache.rows == 2  # only the two rows that had to move were copied
    alone, _ = prefilled(tiny_lm, ["thank you", "the quick brown fox"])
    assert cache.width == alone.width  # the long row's padding left with it
    torch.testing.assert_close(cache.keys_values()[0][0], keys[2:, :, -alone.width:], rtol=0, atol=0)
    assert torch.equal(cache.mask(), alone.mask())
    assert cache.remove([1]) == [] and cache.rows == 1  # the last row leaves: nothing moves


def test_buffers_grow_by_chunks_and_keep_the_window(tiny_lm):
    cache, logits = prefilled(tiny_lm, TEXTS, extra=0)
    reference, _ = prefilled(tiny_lm, TEXTS, extra=200)
    relayouts = 0
    with torch.inference_mode():
        other = logits
        for _ in range(3 * GROW_COLUMNS):
            token = logits.argmax(-1, keepdim=True)
            capacity = cache._mask.shape[1]
            logits = internals.forward_step(tiny_lm.model, token, cache.attention_mask(1), cache)
            other = internals.forward_step(tiny_lm.model, token, reference.attention_mask(1), reference)
            relayouts += cache._mask.shape[1] != capacity
            torch.testing.assert_close(logits, other, rtol=1e-5, atol=1e-5)
    assert 1 <= relayouts <= 3  # by chunks of at least GROW_COLUMNS, never per token
    torch.testing.assert_close(cache.keys_values()[-1][1], reference.keys_values()[-1][1], rtol=0, atol=0)


def test_a_window_sliding_right_is_moved_back_left_when_the_buffer_ends(tiny_lm):
    """A server's batch lives on while its rows come and go: the live window moves right with every
    step, and the buffer does not grow for that: the window moves back to column 0."""
    cache, logits = prefilled(tiny_lm, TEXTS, extra=0)
    born = [0, 0, 0]  # the step each slot's row joined at
    steps = 6 * GROW_COLUMNS
    with torch.inference_mode():
        for step in range(steps):
            if step % 20 == 19:  # the oldest row leaves, a short one joins
                for source, target in cache.remove([born.index(min(born))]):
                    born[target] = born[source]
                born = born[:cache.rows]
                joiner, _ = prefilled(tiny_lm, ["hi"])
                cache.append(joiner, [0])
                born.append(step)
            logits = internals.forward_step(tiny_lm.model, torch.full((cache.rows, 1), 5), cache.attention_mask(1), cache)
    assert cache.width <= 62 and cache._mask.shape[1] < 3 * GROW_COLUMNS < steps  # the buffer did not grow with the steps
    assert bool(torch.isfinite(logits).all())


def test_take_copies_rows_with_room_for_more(tiny_lm):
    cache, _ = prefilled(tiny_lm, TEXTS)
    taken = cache.take([2, 2, 0], extra=5)
    assert isinstance(taken, BatchCache) and taken.rows == 3 and taken.width == cache.width
    torch.testing.assert_close(taken.keys_values()[3][0][1], cache.keys_values()[3][0][2], rtol=0, atol=0)
    assert torch.equal(taken.mask()[2], cache.mask()[0]) and taken._mask.shape[1] >= cache.width + 5
