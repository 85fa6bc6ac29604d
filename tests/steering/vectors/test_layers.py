"""The study's layer range, mapped onto a model's depth."""

import pytest

from steer_away.internals import LayerError
from steer_away.steering.vectors.layers import SEED_SPEC, default_layers, map_layer_range, parse_layer_spec


def test_map_layer_range_keeps_relative_depth():
    assert map_layer_range(16, 22, depth=32) == list(range(16, 23))
    assert map_layer_range(16, 22, depth=30) == list(range(15, 22))
    assert map_layer_range(16, 22, depth=16) == list(range(8, 12))
    with pytest.raises(LayerError):
        map_layer_range(20, 40, depth=30)


def test_seed_spec_is_the_study_range_and_numbers_pass_through(tiny_lm):
    assert parse_layer_spec(SEED_SPEC, depth=30) == list(range(15, 22))
    assert parse_layer_spec(" seed ", depth=None) == []  # syntax only
    assert parse_layer_spec("1,3", depth=4) == [1, 3]
    with pytest.raises(LayerError):
        parse_layer_spec("2-5", depth=4)
    assert default_layers(tiny_lm.model) == map_layer_range(16, 22, depth=4) == [2, 3]
