"""What a served dislike bank tells the feedback learner: the shrinkage it was composed with."""

import pytest
import torch

from steer_away.steering.vectors.bank import VectorBank
from steer_away.steering.vectors.online import DEFAULT_SHRINKAGE, bank_shrinkage
from steer_away.steering.vectors.vector import SteeringVector


def card(meta):
    return SteeringVector({1: torch.ones(4)}, "m", 4, 2, meta=meta)


@pytest.mark.parametrize("n, k", [(6, 10.0), (3, 2.5), (40, 25.0)])
def test_the_shrinkage_is_read_back_from_a_user_vector_s_card(n, k):
    bank = VectorBank(card({}), {"u": card({"n_pairs": n, "shrink_weight": n / (n + k)})})
    assert bank_shrinkage(bank) == pytest.approx(k)


def test_a_bank_whose_cards_do_not_say_gets_compose_s_default():
    assert bank_shrinkage(VectorBank(card({}), {"u": card({"kind": "dislike"})})) == DEFAULT_SHRINKAGE
    assert bank_shrinkage(VectorBank(card({}), {})) == DEFAULT_SHRINKAGE
