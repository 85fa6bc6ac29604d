import json

import numpy as np
import pytest

from steer_away.data.prism import LoadReport, PrismData, SurveyRecord, load_prism, validate_conversation
from steer_away.profiles import SensitivityRule, build_profiles, load_profiles, save_profiles
from steer_away.scoring.base import ToxicityScorer


class WordScorer(ToxicityScorer):
    """Synthetic scorer: TOXICITY = share of the words 'idiot'/'stupid' in the text."""

    backend = "words"
    attributes = ("TOXICITY", "INSULT")

    def score_batch(self, texts):
        out = []
        for text in texts:
            words = text.lower().split()
            bad = sum(w in ("idiot", "stupid") for w in words) / max(1, len(words))
            out.append([bad, bad / 2])
        return np.array(out)


def turns_for(user, choose_rude):
    polite, rude = "thanks for asking kindly", "stupid idiot question"
    hist = [{"turn": 0, "role": "user", "content": "q"},
            {"turn": 0, "role": "model", "content": polite, "score": 20 if choose_rude else 90},
            {"turn": 0, "role": "model", "content": rude, "score": 80 if choose_rude else 10}]
    return validate_conversation({"conversation_id": f"c-{user}", "user_id": user, "conversation_history": hist},
                                 "x", LoadReport())


def test_profile_numbers_by_hand():
    turns = turns_for("nice", False) + turns_for("edgy", True)
    data = PrismData(survey={"nice": SurveyRecord("nice", 90.0, {})}, turns=turns, report=LoadReport())
    profiles = build_profiles(data, WordScorer(), rule=SensitivityRule(0.1, 0.5, absolute=True))
    nice, edgy = profiles["nice"], profiles["edgy"]
    assert nice.preferred_toxicity == [0.0, 0.0]
    assert edgy.preferred_toxicity == pytest.approx([2 / 3, 1 / 3])
    assert nice.dislike == pytest.approx(2 / 3) and edgy.dislike == pytest.approx(-2 / 3)
    assert nice.sensitivity == "strict" and edgy.sensitivity == "tolerant"
    assert nice.stated_safety == 90.0 and edgy.stated_safety is None
    assert nice.bt_theta[0] < 0 < edgy.bt_theta[0]
    assert nice.n_pairs == 1


def test_fixture_temperaments_are_recovered(tmp_path):
    from steer_away.scoring.jigsaw import JigsawBiLSTMScorer

    profiles = build_profiles(load_prism(), JigsawBiLSTMScorer())
    # the fixture's users cycle strict, moderate, tolerant (scripts/make_fixture.py)
    expected = {0: "strict", 1: "moderate", 2: "tolerant"}
    hits = sum(p.sensitivity == expected[int(uid[4:]) % 3] for uid, p in profiles.items())
    assert hits / len(profiles) > 0.85


def test_save_load_round_trip_and_errors(tmp_path):
    turns = turns_for("nice", False) + turns_for("edgy", True)
    profiles = build_profiles(PrismData({}, turns, LoadReport()), WordScorer())
    path = tmp_path / "profiles.json"
    save_profiles(profiles, path, "words")
    assert load_profiles(path) == profiles
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a steer-away profiles file"):
        load_profiles(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_profiles(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_profiles(tmp_path / "nope.json")
