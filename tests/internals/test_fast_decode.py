"""The CPU decode backend: same logits as the model's own forward, and out of the way when it must be."""

import pytest
import torch

from steer_away import internals
from steer_away.chat import encode
from tests.conftest import make_tiny_lm


def _decode_logits(lm, texts, edits, steps=3):
    """Logits of a few greedy one-token steps after a prefill, through forward_step."""
    ids, mask = encode(lm, texts)
    cache = internals.new_kv_cache(lm.model)
    out = []
    with torch.inference_mode():
        logits = internals.forward_step(lm.model, ids, mask, cache, edits)
        for _ in range(steps):
            token = logits.argmax(-1, keepdim=True)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            logits = internals.forward_step(lm.model, token, mask, cache, edits)
            out.append(logits)
    return torch.stack(out)


@pytest.mark.parametrize("rows", [1, 3, 5])  # 1-3 rows take the input-major weight copies, more the model's own
def test_fast_decode_step_matches_the_models_own_forward(tiny_lm, monkeypatch, rows):
    texts = ["the quick brown fox", "thank you", "what is the capital of France? Paris is", "hi", "shut up"][:rows]
    push = torch.randn(rows, 1, 32, generator=torch.Generator().manual_seed(0))

    def edits():
        return {1: lambda h: h.add_(push), 3: lambda h: h.mul_(0.9)}

    assert internals.fast_decoder(tiny_lm.model) is not None
    fast = _decode_logits(tiny_lm, texts, edits())
    monkeypatch.setenv("STEER_AWAY_FAST_DECODE", "0")
    assert internals.fast_decoder(tiny_lm.model) is None
    reference = _decode_logits(tiny_lm, texts, edits())
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    plain = _decode_logits(tiny_lm, texts, {})
    assert not torch.allclose(plain, reference)  # the edits did act, in both paths


def test_a_hook_on_the_model_sends_steps_through_its_own_forward(tiny_lm, tokenizer):
    with torch.inference_mode():  # transformers then leaves its own (idle) output-capturing hooks installed
        tiny_lm.model(torch.tensor([[5, 6, 7]]), output_hidden_states=True)
    assert internals.fast_decoder(tiny_lm.model) is not None
    handle = tiny_lm.model.lm_head.register_forward_hook(lambda m, i, o: o)
    try:
        assert internals.fast_decoder(tiny_lm.model) is None  # the hook must run, so the model's forward does
    finally:
        handle.remove()
    assert internals.fast_decoder(tiny_lm.model) is not None
    assert internals.fast_decoder(make_tiny_lm("gpt2", tokenizer).model) is None  # not a Llama decoder layer
