"""Leave-one-prompt-out Δ% and prompt concentration on small synthetic answers (3 users, every user
preferring TOXICITY 0, so an answer's distance is its TOXICITY)."""

import math

import pytest

from steer_away.evaluation.report.analysis import main_rows
from steer_away.evaluation.report.robustness import one_prompt_robustness, prompt_concentration
from tests.evaluation.report.cells import cell, record

USERS = ["a", "b", "c"]
PREFERRED = dict.fromkeys(USERS, 0.0)


def rows(toxicity_by_prompt):
    return [record(u, p, f"answer to {p}", t, attribute_mae=t) for u in USERS for p, t in toxicity_by_prompt.items()]


def test_an_effect_carried_by_one_prompt_is_fragile():
    # p1's unsteered answers are toxic and steering clears them; on every other prompt steering adds a little
    base = rows({"p1": 0.8, "p2": 0.1, "p3": 0.1, "p4": 0.1})
    steered = rows({"p1": 0.0, "p2": 0.11, "p3": 0.11, "p4": 0.11})
    cells = [cell("b", "unsteered", tox_dist=1.1 / 4),
             cell("s", "caa-population", 1.0, preferred_toxicity=PREFERRED, tox_dist=0.33 / 4)]
    (_, row) = main_rows(cells, answers={"b": base, "s": steered})
    assert row.tox_delta_pct < 0  # the headline says closer to the users
    assert row.top_prompt_id == "p1" and row.top_prompt == "prompt p1"
    assert row.tox_delta_wo_top_pct == pytest.approx(10.0)  # without p1: 0.11 against 0.1 everywhere
    assert row.tox_delta_wo_top_ci == pytest.approx((10.0, 10.0))
    assert row.fragile


def test_a_change_spread_over_prompts_is_not_fragile():
    base = rows({"p1": 0.4, "p2": 0.4, "p3": 0.5, "p4": 0.4, "p5": 0.4})
    steered = rows({"p1": 0.2, "p2": 0.2, "p3": 0.1, "p4": 0.2, "p5": 0.2})
    full_ci = (-60.0, -50.0)
    robust = one_prompt_robustness(steered, base, PREFERRED, full_ci)
    # p3 dropped most, so leaving it out moves Δ% furthest toward zero: (0.2 − 0.4) / 0.4 = −50 %
    assert robust.prompt_id == "p3" and robust.pct == pytest.approx(-50.0)
    assert robust.ci == pytest.approx((-50.0, -50.0)) and not robust.fragile
    # the same figures whose full interval straddled 0 would change significance: fragile
    assert one_prompt_robustness(steered, base, PREFERRED, (-80.0, 5.0)).fragile


def test_one_prompt_cannot_be_left_out():
    robust = one_prompt_robustness(rows({"p1": 0.2}), rows({"p1": 0.4}), PREFERRED, None)
    assert math.isnan(robust.pct) and robust.prompt_id == "" and not robust.fragile


def test_prompt_concentration_shares_and_toxic_prompts():
    base = rows({"p1": 0.6, "p2": 0.2, "p3": 0.15, "p4": 0.05})
    c = prompt_concentration(base)
    assert c is not None and c.prompts == 4
    assert sum(c.shares.values()) == pytest.approx(1.0)
    assert c.top_prompt_id == "p1" and c.top_share == pytest.approx(0.6) and c.top_prompt == "prompt p1"
    assert c.toxic_prompts == 3 and c.threshold == 0.1  # p4's 0.05 is not over 0.1
    assert prompt_concentration([]) is None
