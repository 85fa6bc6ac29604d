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

    profiles = build_profiles(load_prism("contrast-fixture"), JigsawBiLSTMScorer())
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


def _profiles_file(tmp_path, records):
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"format": "steer-away/profiles@1", "scorer": "t", "profiles": records}))
    return path


def _record(user="u1", **change):
    base = {"user_id": user, "attributes": ["TOXICITY"], "preferred_toxicity": [0.1], "rejected_toxicity": [0.2],
            "dislike": 0.1, "stated_safety": 80, "sensitivity": "strict", "bt_theta": [0.0], "n_pairs": 3,
            "n_turns": 2, "extra": {}}
    return {**base, **change}


@pytest.mark.parametrize("records, message", [
    ({"nested": _record()}, "'profiles' must be a list"),
    (["not an object"], r"profiles\[0\] is not an object"),
    ([_record(preferred_toxicity="low")], r"profiles\[0\] \(user u1\): 'preferred_toxicity' must list 1 finite"),
    ([_record(preferred_toxicity=[0.1, 0.2])], "must list 1 finite numbers"),
    ([_record(n_pairs="3")], "'n_pairs' must be a whole number"),
    ([_record(stated_safety=300)], "'stated_safety' must be null or a number in 0-100"),
    ([_record(sensitivity="lenient")], "'sensitivity' must be one of strict, moderate, tolerant"),
    ([_record(user_id=7)], "'user_id' must be a non-empty string"),
    ([_record(), _record()], r"user 'u1' appears twice \(profiles\[0\] and profiles\[1\]\)"),
    ([_record(sensitivty="strict")], "unknown field 'sensitivty'"),
])
def test_malformed_profiles_name_file_record_and_field(tmp_path, records, message):
    path = _profiles_file(tmp_path, records)
    with pytest.raises(ValueError, match=message) as caught:
        load_profiles(path)
    assert str(path) in str(caught.value)
