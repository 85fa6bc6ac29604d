"""Residual hooks edit inside their scope and are always removed."""

import pytest
import torch

from steer_away import internals
from tests.conftest import make_tiny_lm

ARCHS = ["llama", "qwen2", "mistral", "gemma", "gpt2"]


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
