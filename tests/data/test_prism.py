import json

import pytest

from steer_away.data.pairs import preference_pairs
from steer_away.data.prism import LoadReport, load_prism, validate_conversation


def conv(conv_id="c1", user="u1", history=None, conv_type="unguided"):
    if history is None:
        history = [
            {"turn": 0, "role": "user", "content": "hi"},
            {"turn": 0, "role": "model", "content": "A", "score": 90, "if_chosen": True, "within_turn_id": 0},
            {"turn": 0, "role": "model", "content": "B", "score": 40, "if_chosen": False, "within_turn_id": 1},
            {"turn": 0, "role": "model", "content": "C", "score": 70, "if_chosen": False, "within_turn_id": 2},
            {"turn": 1, "role": "user", "content": "more"},
            {"turn": 1, "role": "model", "content": "D", "score": 20, "if_chosen": False, "within_turn_id": 0},
            {"turn": 1, "role": "model", "content": "E", "score": 55, "if_chosen": True, "within_turn_id": 1},
        ]
    return {"conversation_id": conv_id, "user_id": user, "conversation_type": conv_type,
            "conversation_history": history}


def test_pairs_from_hand_made_conversation():
    report = LoadReport()
    turns = validate_conversation(conv(), "conversations.jsonl", report)
    assert report.skipped == 0 and [t.turn for t in turns] == [0, 1]
    assert turns[1].history == (("user", "hi"), ("assistant", "A"))
    pairs = preference_pairs(turns)
    got = sorted((p.turn, p.chosen, p.rejected, p.margin) for p in pairs)
    assert got == [(0, "A", "B", 50.0), (0, "A", "C", 20.0), (1, "E", "D", 35.0)]
    assert [p.rejected for p in preference_pairs(turns, min_margin=30)] == ["B", "D"]
    assert {p.turn for p in preference_pairs(turns, max_turn=0)} == {0}


def test_chosen_falls_back_to_highest_score_without_flags():
    history = [{"turn": 0, "role": "user", "content": "q"},
               {"turn": 0, "role": "model", "content": "low", "score": 10},
               {"turn": 0, "role": "model", "content": "high", "score": 80}]
    pairs = preference_pairs(validate_conversation(conv(history=history), "x", LoadReport()))
    assert [(p.chosen, p.rejected) for p in pairs] == [("high", "low")]


@pytest.mark.parametrize("mutate, field, problem", [
    (lambda r: r.pop("conversation_id"), "conversation_id", "missing"),
    (lambda r: r.update(user_id=""), "user_id", "missing or empty"),
    (lambda r: r.update(conversation_type="weird"), "conversation_type", "must be one of"),
    (lambda r: r.update(conversation_history=[]), "conversation_history", "non-empty list"),
    (lambda r: r["conversation_history"][1].update(score=150), "conversation_history[1].score", "1-100"),
    (lambda r: r["conversation_history"][1].update(score="high"), "conversation_history[1].score", "1-100"),
    (lambda r: r["conversation_history"][2].update(content=""), "conversation_history[2].content", "empty"),
    (lambda r: r["conversation_history"][2].update(role="bot"), "conversation_history[2].role", "'user' or"),
    (lambda r: r["conversation_history"][2].update(turn=-1), "conversation_history[2].turn", "non-negative"),
    (lambda r: r["conversation_history"][1].update(if_chosen="yes"), "conversation_history[1].if_chosen", "true"),
    (lambda r: r["conversation_history"][1].update(within_turn_id="x"), "conversation_history[1].within_turn_id",
     "non-negative integer"),
    (lambda r: r["conversation_history"][3].update(content="a" * 60_000), "conversation_history[3].content",
     "the limit is 50000"),
])
def test_each_malformed_kind_is_reported_with_id_and_field(mutate, field, problem):
    record = conv(conv_id="c42")
    mutate(record)
    report = LoadReport()
    assert validate_conversation(record, "conversations.jsonl", report) == []
    assert report.skipped == 1
    issue = report.issues[0]
    assert issue.field == field and problem in issue.problem
    assert issue.record_id == ("c42" if field != "conversation_id" else "?")
    assert "conversations.jsonl record" in str(issue)


def test_turn_with_a_single_response_is_skipped_keeping_earlier_turns():
    record = conv()
    record["conversation_history"] = record["conversation_history"][:5] + record["conversation_history"][6:]
    report = LoadReport()
    turns = validate_conversation(record, "f", report)
    assert [t.turn for t in turns] == [0]
    assert report.issues[0].field == "turn 1"


def test_local_folder_load_reports_and_skips(tmp_path):
    survey = [{"user_id": "u1", "stated_prefs": {"safety": 80}}, {"user_id": "u2", "stated_prefs": {"safety": 300}}]
    (tmp_path / "survey.jsonl").write_text("\n".join(json.dumps(r) for r in survey))
    lines = [json.dumps(conv("c1")), "{not json", json.dumps(conv("c2", history=[{"turn": 0}]))]
    (tmp_path / "conversations.jsonl").write_text("\n".join(lines))
    data = load_prism(tmp_path)
    assert list(data.survey) == ["u1"] and data.survey["u1"].stated_safety == 80
    assert len(data.turns) == 2
    assert data.report.skipped == 3
    where = {(i.record_id, i.field) for i in data.report.issues}
    assert ("u2", "stated_prefs.safety") in where and ("line 2", "<json>") in where
    assert ("c2", "conversation_history[0].role") in where
    assert "skipped 3" in data.report.summary()


def test_bad_records_never_fail_the_load_and_duplicates_are_reported(tmp_path):
    survey = [{"user_id": "u1", "stated_prefs": {"safety": 80}}, {"user_id": "u1", "stated_prefs": {"safety": 10}}]
    (tmp_path / "survey.jsonl").write_text("\n".join(json.dumps(r) for r in survey))
    bad_within = conv("c3")
    bad_within["conversation_history"][1]["within_turn_id"] = "first"
    duplicate = conv("c1", history=conv()["conversation_history"][:4])  # same id, other content
    lines = [json.dumps(conv("c1")), "[" * 100_000 + "]" * 100_000, json.dumps(bad_within), json.dumps(duplicate),
             json.dumps(conv("c2"))]
    (tmp_path / "conversations.jsonl").write_text("\n".join(lines))
    data = load_prism(tmp_path)
    assert data.survey["u1"].stated_safety == 80  # the first record stands
    assert sorted({t.conversation_id for t in data.turns}) == ["c1", "c2"]
    assert len([t for t in data.turns if t.conversation_id == "c1"]) == 2  # not the duplicate's turns
    where = {(i.record_id, i.field): i.problem for i in data.report.issues}
    assert "appears again" in where[("u1", "user_id")] and "appears again" in where[("c1", "conversation_id")]
    assert ("c3", "conversation_history[1].within_turn_id") in where
    assert where[("line 2", "<json>")] == "is nested too deeply"


def test_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="survey.jsonl"):
        load_prism(tmp_path)


@pytest.mark.parametrize("source", ["contrast-fixture", None])
def test_shipped_data_loads_clean_and_is_synthetic(source):
    data = load_prism(source)
    assert data.report.skipped == 0
    assert len(data.survey) >= 30 and len(data.turns) >= 200
    assert all(r.demographics.get("synthetic") for r in data.survey.values())
