"""Vector bank kinds are named in one table that methods, resources and the vector code read."""

import pytest

from steer_away.steering.framework.resources import Needs, SteeringResources
from steer_away.steering.registry import get_method, method_names
from steer_away.steering.vectors.kinds import BANK_KINDS, COMPOSED_KINDS, bank_kind


def test_the_table_names_every_kind_once():
    assert list(BANK_KINDS) == ["population", "dislike", "bt"]
    assert COMPOSED_KINDS == ("dislike", "bt")  # what `vectors compose --mode` builds: the per-user kinds
    assert not bank_kind("population").per_user and bank_kind("bt").per_user
    with pytest.raises(ValueError, match=r"unknown vector bank kind 'nope' \(have population, dislike, bt\)"):
        bank_kind("nope")


def test_methods_and_resources_only_take_kinds_from_the_table(tiny_lm, tmp_path):
    banks = {get_method(n).needs.vector_bank for n in method_names()} - {None}
    assert banks == set(BANK_KINDS)
    with pytest.raises(ValueError, match="unknown vector bank kind 'dislikes'"):
        Needs(vector_bank="dislikes")
    with pytest.raises(ValueError, match="unknown vector bank kind"):
        SteeringResources(tiny_lm, vectors=tmp_path).vector_bank("populaton")
