"""Where a model keeps its layers, and layer indices checked against it."""

import pytest

from steer_away import internals
from tests.conftest import make_tiny_lm

ARCHS = ["llama", "qwen2", "mistral", "gemma", "gpt2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_layers_and_hidden_size_found(arch, tokenizer):
    lm = make_tiny_lm(arch, tokenizer)
    assert internals.num_layers(lm.model) == 4
    assert internals.hidden_size(lm.model) == 32


def test_layer_out_of_range_is_a_clear_error(tiny_lm):
    with (pytest.raises(internals.LayerError, match="layer index 9 out of range: the model has layers 0-3"),
          internals.residual_hooks(tiny_lm.model, {9: lambda h: None})):
        pass
    with pytest.raises(internals.LayerError, match="out of range"):
        internals.parse_layers("2-5", depth=4)
    assert internals.parse_layers("1,3", depth=4) == [1, 3]
    with pytest.raises(internals.LayerError, match="cannot parse"):
        internals.parse_layers("a-b", depth=4)


