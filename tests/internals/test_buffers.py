"""The pool of cache buffers: handed out again by size, bounded, and never a source of stale values."""

import torch

from steer_away.decoding import DecodeLoop, DecodeRequest
from steer_away.generation import GenerationConfig, generate
from steer_away.internals.buffers import POOL, BufferPool
from steer_away.profiles.build import UserProfile
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.logits import EADS
from tests.decoding.test_loop import CATS, PROMPTS


def test_the_smallest_buffer_that_fits_is_handed_out_again():
    cpu = torch.device("cpu")
    pool = BufferPool(keep_bytes=10_000)
    small, large = pool.take(100, torch.float32, cpu), pool.take(1000, torch.float32, cpu)
    pool.give(large)
    pool.give(small)
    assert pool.take(60, torch.float32, cpu) is small
    assert pool.take(60, torch.float64, cpu) is not large  # another dtype: a new one
    assert pool.take(100, torch.float32, cpu) is not large  # ten times too large: kept for a larger cache
    assert pool.take(500, torch.float32, cpu) is large
    pool.give(torch.empty(3000))  # 12,000 bytes: over the bound, so the largest goes
    pool.give(small)
    assert [b.numel() for b in pool.free()] == [100]


def test_a_buffer_given_back_while_the_pool_is_busy_is_not_lost():
    """Finalizers give buffers back, and the garbage collector may run one inside `take` itself (in the
    same thread, under its lock): giving never waits for the lock."""
    cpu = torch.device("cpu")
    pool = BufferPool()
    with pool._lock:  # as if a collection ran a finalizer in the middle of `take`
        pool.give(torch.empty(64))
    assert pool.take(64, torch.float32, cpu).numel() == 64 and pool.reused == 1


def test_stale_values_in_reused_buffers_change_no_answer(tiny_lm):
    """Buffers come back holding whatever their last cache left (here: NaN everywhere): every column a
    pass reads must have been written or zeroed first, padding included."""
    config = GenerationConfig(max_new_tokens=10, stop_on_eos=False)
    profiles = {"s": UserProfile("s", ["TOXICITY"], [0.1], [0.2], 0.1, None, "strict", [0.0], 1, 1)}
    rows = [RowSteering("s"), RowSteering(), RowSteering("s"), RowSteering()]

    def run():
        answers = [g.token_ids for g in generate(tiny_lm, PROMPTS, method=EADS(CATS, profiles), rows=rows, config=config)]
        loop = DecodeLoop(tiny_lm)  # rows joining mid-flight, wider and narrower, and leaving early
        requests = [loop.add(DecodeRequest("hi", config=GenerationConfig(max_new_tokens=20, stop_on_eos=False)))]
        loop.step()
        for _step, (prompt, length) in enumerate(zip(PROMPTS[::-1] * 2, (12, 3, 9, 2, 7, 5, 10, 4))):
            requests.append(loop.add(DecodeRequest(prompt, EADS(CATS, profiles), RowSteering("s"),
                                                   GenerationConfig(max_new_tokens=length, stop_on_eos=False))))
            loop.step()
        loop.run()
        return answers + [r.tokens for r in requests]

    POOL.clear()
    clean = run()
    assert POOL.free()  # the caches gave their buffers back
    with torch.inference_mode():
        for buffer in POOL.free():
            buffer.fill_(float("nan"))
    reused = POOL.reused
    assert run() == clean and POOL.reused > reused
