import pytest
import torch

from steer_away import internals
from tests.conftest import make_tiny_lm

ARCHS = ["llama", "qwen2", "mistral", "gemma", "gpt2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_layers_and_hidden_size_found(arch, tokenizer):
    lm = make_tiny_lm(arch, tokenizer)
    assert internals.num_layers(lm.model) == 4
    assert internals.hidden_size(lm.model) == 32


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_hook_edits_and_is_removed(arch, tokenizer):
    lm = make_tiny_lm(arch, tokenizer)
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        plain = internals.forward_full(lm.model, ids, mask)

        def push(hidden):
            hidden.add_(1.0)

        with internals.residual_hooks(lm.model, {1: push}):
            pushed = internals.forward_full(lm.model, ids, mask)
        after = internals.forward_full(lm.model, ids, mask)
    assert not torch.allclose(plain, pushed)
    torch.testing.assert_close(plain, after, rtol=0, atol=0)


def test_hooks_removed_after_exception(tiny_lm):
    layers = internals.decoder_layers(tiny_lm.model)
    before = [len(layer._forward_hooks) for layer in layers]  # transformers may keep its own capture hooks
    hooks = internals.residual_hooks(tiny_lm.model, {0: lambda h: None, 2: lambda h: None})
    with pytest.raises(RuntimeError, match="boom"), hooks:
        assert len(layers[0]._forward_hooks) == before[0] + 1
        raise RuntimeError("boom")
    assert [len(layer._forward_hooks) for layer in layers] == before


def test_map_layer_range_keeps_relative_depth():
    assert internals.map_layer_range(16, 22, depth=32) == list(range(16, 23))
    assert internals.map_layer_range(16, 22, depth=30) == list(range(15, 22))
    assert internals.map_layer_range(16, 22, depth=16) == list(range(8, 12))
    with pytest.raises(internals.LayerError):
        internals.map_layer_range(20, 40, depth=30)


def test_layer_out_of_range_is_a_clear_error(tiny_lm):
    with (pytest.raises(internals.LayerError, match="layer index 9 out of range: the model has layers 0-3"),
          internals.residual_hooks(tiny_lm.model, {9: lambda h: None})):
        pass
    with pytest.raises(internals.LayerError, match="out of range"):
        internals.parse_layers("2-5", depth=4)
    assert internals.parse_layers("1,3", depth=4) == [1, 3]
    assert internals.parse_layers("seed", depth=30) == list(range(15, 22))
    with pytest.raises(internals.LayerError, match="cannot parse"):
        internals.parse_layers("a-b", depth=4)


def _decode_logits(lm, texts, edits, steps=3):
    """Logits of a few greedy one-token steps after a prefill, through forward_step."""
    from steer_away.chat import encode

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
