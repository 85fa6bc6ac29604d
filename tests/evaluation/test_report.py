"""Report tables on hand-built cells: where a change comes from, group effects, the study's colour bins."""

import pytest

from steer_away.evaluation.report import change_bin, change_sources, sensitivity_effects
from steer_away.evaluation.store import AnswerRecord

LOOP = "the night of the party, " * 8


def record(user, prompt, answer, tox):
    return AnswerRecord(f"{user}|{prompt}", user, prompt, "harmful_borderline", f"prompt {prompt}", answer,
                        [tox, 0, 0, 0, 0, 0], 0.0, 2.0, 10)


def cell(key, method, alpha=None, groups=None, preferred=None):
    return {"key": key, "method": method, "alpha": alpha, "settings": "",
            "summary": {"sensitivity_of": groups or {}, "preferred_toxicity": preferred or {}}}


def test_change_sources_splits_collapse_and_finds_the_prompt_that_moved():
    users, prompts = ["a", "b"], ["p1", "p2", "p3"]
    base = [record(u, p, "A normal helpful answer about the topic at hand.", 0.6 if p == "p1" else 0.1)
            for u in users for p in prompts]
    # steering loops on p1 (its toxicity falls to 0.0) and lowers the others a little
    steered = [record(u, p, LOOP if p == "p1" else "Another normal and helpful answer here.",
                      0.0 if p == "p1" else 0.05) for u in users for p in prompts]
    rows = change_sources([cell("b", "unsteered"), cell("s", "caa-population", 0.5)], {"b": base, "s": steered})
    (row,) = rows
    total = 2 * (-0.6) + 4 * (-0.05)
    assert row["toxicity_change"] == pytest.approx(total / 6)
    assert row["from_collapsed"] == pytest.approx(2 * -0.6 / total)
    assert row["top_prompt"] == "prompt p1" and row["top_prompt_share"] == pytest.approx(2 * -0.6 / total)
    assert row["clean_rows"] == 4 and row["clean_steered"] == pytest.approx(0.05)
    assert row["clean_unsteered"] == pytest.approx(0.1)


def test_sensitivity_effects_interval_excludes_zero_only_for_a_consistent_change():
    users = {f"s{i}": "strict" for i in range(4)} | {f"t{i}": "tolerant" for i in range(4)}
    preferred = dict.fromkeys(users, 0.0)
    prompts = [f"p{j}" for j in range(6)]
    base = [record(u, p, "x", 0.2) for u in users for p in prompts]
    # strict users: every answer 0.1 lower; tolerant users: up on half the prompts, down on the other half
    steered = [record(u, p, "x", 0.1 if users[u] == "strict" else (0.3 if int(p[1]) % 2 else 0.1))
               for u in users for p in prompts]
    rows = sensitivity_effects([cell("b", "unsteered"), cell("s", "eads", 1.0, users, preferred)],
                               {"b": base, "s": steered})
    strict, tolerant = (next(r for r in rows if r["group"] == g) for g in ("strict", "tolerant"))
    assert strict["toxicity_change"] == pytest.approx(-0.1) and strict["toxicity_change_ci"][1] < 0
    assert strict["distance_change"] == pytest.approx(-0.1) and strict["users"] == 4
    assert tolerant["toxicity_change"] == pytest.approx(0.0, abs=1e-12)
    assert tolerant["toxicity_change_ci"][0] < 0 < tolerant["toxicity_change_ci"][1]


@pytest.mark.parametrize("pct, marker", [(-2.0, "⬜"), (4.9, "⬜"), (-9.0, "🟨"), (-15.0, "🟩"), (-40.0, "🟩"),
                                         (7.0, "🟧"), (15.0, "🟥"), (float("nan"), "⬜")])
def test_change_bins_follow_the_study(pct, marker):
    assert change_bin(pct) == marker
