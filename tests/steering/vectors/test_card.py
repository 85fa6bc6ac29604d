"""Vector cards on a tiny random model: the numbers are the vector's own, and a vector that points
toward toxicity is flagged."""

import json

import pytest
import torch

from steer_away.steering.vectors.card import (
    contrast_pairs,
    load_cards,
    respectful_direction,
    save_cards,
    summarise_bank,
    vector_card,
)
from steer_away.steering.vectors.vector import SteeringVector

LAYERS = [1, 2]


def vector_from(directions, norms=None):
    meta = {"kind": "population", "n_pairs": 7, "position": "last"}
    if norms is not None:
        meta["residual_norms"] = {str(k): v for k, v in norms.items()}
    return SteeringVector(directions=directions, model_id="tiny", hidden_size=32, num_layers=4, meta=meta)


def test_shipped_contrast_set_is_whole_and_distinct():
    pairs = contrast_pairs()
    assert len(pairs) == 20
    assert len({p.prompt for p in pairs}) == 20
    assert all(p.chosen != p.rejected for p in pairs)


def test_card_measures_cosine_norms_and_flags_a_toxic_direction(tiny_lm):
    respectful = respectful_direction(tiny_lm, LAYERS)
    toward_respect = vector_from({l: 3.0 * respectful[l] for l in LAYERS}, norms={1: 10.0, 2: 20.0})
    card = vector_card(toward_respect, tiny_lm, "good", respectful=respectful, top_k=4)
    assert [round(layer.cosine_respectful, 4) for layer in card.layers] == [1.0, 1.0]
    assert card.layers[0].norm == pytest.approx(3.0 * float(respectful[1].norm()), rel=1e-5)
    assert card.layers[1].relative_norm == pytest.approx(card.layers[1].norm / 20.0)
    assert not card.toward_toxicity and "away from toxicity" in card.verdict
    assert len(card.promoted) == 4 and len(card.suppressed) == 4

    mixed = vector_from({1: respectful[1].clone(), 2: -respectful[2]})
    flagged = vector_card(mixed, tiny_lm, "bad", respectful=respectful)
    assert flagged.toward_toxicity and "layers 2" in flagged.verdict
    assert flagged.layers[1].cosine_respectful == pytest.approx(-1.0, abs=1e-5)
    assert flagged.layers[0].relative_norm is None  # no residual norms recorded: shown as '-'
    assert "| 1 |" in flagged.markdown() and "POINTS TOWARD TOXICITY" in flagged.markdown()


def test_logit_lens_promotes_the_token_the_vector_writes(tiny_lm):
    head = tiny_lm.model.get_output_embeddings().weight
    norm_gain = tiny_lm.model.model.norm.weight
    target = 57
    direction = head[target] / norm_gain  # the gain is applied again by the lens
    card = vector_card(vector_from({1: direction.detach().clone()}), tiny_lm, "lens",
                       respectful={1: torch.ones(32)}, top_k=1)
    assert card.promoted == [tiny_lm.tokenizer.decode([target]).strip() or
                             repr(tiny_lm.tokenizer.convert_ids_to_tokens(target))]


def test_cards_round_trip_and_bank_summary(tmp_path, tiny_lm):
    respectful = {l: torch.ones(32) for l in LAYERS}
    card = vector_card(vector_from({l: torch.ones(32) for l in LAYERS}), tiny_lm, "pop", respectful=respectful)
    users = {"u1": vector_from({l: torch.ones(32) for l in LAYERS}, norms={1: 2.0, 2: 2.0}),
             "u2": vector_from({1: -torch.ones(32), 2: torch.ones(32)}, norms={1: 2.0, 2: 2.0})}
    bank = summarise_bank("dislike", users, respectful)
    assert [round(float(u["cosine_min"]), 3) for u in bank.users] == [1.0, -1.0]
    assert "1 of them point toward toxicity" in bank.markdown()
    path = save_cards([card], tmp_path / "cards.json", [bank])
    cards, banks = load_cards(path)
    assert cards[0].to_dict() == card.to_dict() and banks[0].users == bank.users
    (tmp_path / "other.json").write_text(json.dumps({"format": "nope"}))
    with pytest.raises(ValueError, match="not a steer-away vector-card file"):
        load_cards(tmp_path / "other.json")
