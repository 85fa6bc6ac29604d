"""Guards on hand-built (synthetic) cells: each answer's state, where a change comes from state by state,
relevance and violations against unsteered, and the best cell under the guards."""

import math

import pytest

from steer_away.evaluation.metrics.guards import OFF_REQUEST, answer_state
from steer_away.evaluation.report.analysis import main_rows
from steer_away.evaluation.report.guards import best_under_guards, change_sources, guard_rows
from steer_away.evaluation.report.personalisation import head_to_head
from steer_away.evaluation.report.states import guard_figures
from steer_away.profiles.build import tolerated_toxicity
from tests.evaluation.report.cells import cell, record

LOOP = "the night of the party, " * 8
ANSWER = "A normal helpful answer about the topic at hand."
REFUSAL = "I'm sorry, but I can't help with that request."


def test_an_answer_is_in_the_first_state_that_applies():
    assert answer_state(record("a", "p", LOOP, 0.1)) == "collapsed"
    assert answer_state(record("a", "p", REFUSAL, 0.1, relevance=2.0)) == "refused"
    assert answer_state(record("a", "p", ANSWER, 0.1, relevance=OFF_REQUEST - 0.01)) == "off-request"
    assert answer_state(record("a", "p", ANSWER, 0.1, relevance=OFF_REQUEST)) == "intact"
    assert answer_state(record("a", "p", ANSWER, 0.1, relevance=math.nan)) == "intact"  # not scored: not judged


def test_change_sources_split_the_drop_by_state_and_find_the_prompt_that_moved():
    users, prompts = ["a", "b"], ["p1", "p2", "p3", "p4"]
    base = [record(u, p, ANSWER, 0.6 if p == "p1" else 0.1) for u in users for p in prompts]
    texts = {"p1": (LOOP, 0.0, 1.0), "p2": (REFUSAL, 0.0, 1.0), "p3": (ANSWER, 0.0, 0.05), "p4": (ANSWER, 0.05, 1.0)}
    steered = [record(u, p, texts[p][0], texts[p][1], relevance=texts[p][2]) for u in users for p in prompts]
    (row,) = change_sources([cell("b", "unsteered"), cell("s", "guided", 20.0)], {"b": base, "s": steered})
    total = 2 * (-0.6 - 0.1 - 0.1 - 0.05)
    assert row.toxicity_change == pytest.approx(total / 8)
    assert (row.from_collapsed, row.from_refused, row.from_off_request, row.from_intact) == pytest.approx(
        (-1.2 / total, -0.2 / total, -0.2 / total, -0.1 / total))
    assert row.intact_rows == 2 and row.intact_steered == pytest.approx(0.05) and row.intact_unsteered == pytest.approx(0.1)
    assert row.top_prompt == "prompt p1" and row.top_prompt_share == pytest.approx(-1.2 / total)


def test_relevance_change_and_violations_are_paired_and_per_user():
    users = [f"u{i}" for i in range(4)]
    prompts = [f"p{j}" for j in range(5)]
    tolerated = {"u0": 0.05, "u1": 0.05, "u2": 0.5, "u3": 0.5}
    base = {a.row_id: a for a in (record(u, p, ANSWER, 0.2, relevance=1.0) for u in users for p in prompts)}
    rows = [record(u, p, ANSWER if p != "p0" else REFUSAL, 0.2, relevance=0.7) for u in users for p in prompts]
    f = guard_figures(rows, base, tolerated)
    assert f.relevance == pytest.approx(0.7) and f.relevance_delta == pytest.approx(-0.3)
    assert f.relevance_delta_ci[1] < 0  # every row lost 0.3: significantly lower
    assert f.refusal_share == pytest.approx(0.2) and f.violation_share == pytest.approx(0.5)  # u0, u1 at 0.2 > 0.05
    assert math.isnan(guard_figures(rows, base, {}).violation_share)  # no tolerance known: no violation counted


def test_tolerated_toxicity_lies_between_chosen_and_rejected_when_more_toxic_was_turned_down():
    assert tolerated_toxicity(0.01, 0.05) == pytest.approx(0.03)
    assert tolerated_toxicity(0.06, 0.02) == pytest.approx(0.06)  # turned down nothing more toxic


def _cells_and_answers(steered_tox, steered_relevance, steered_text=ANSWER, collapsed=False):
    """Unsteered answers of relevance 1.0; steered ones of `steered_relevance`, give or take 0.2 by prompt."""
    users, prompts = [f"u{i}" for i in range(3)], [f"p{j}" for j in range(8)]
    preferred = dict.fromkeys(users, 0.0)
    base = [record(u, p, ANSWER, 0.2, relevance=1.0) for u in users for p in prompts]
    steered = [record(u, p, LOOP if collapsed and p == "p0" else steered_text, steered_tox,
                      relevance=steered_relevance + (0.2 if int(p[1]) % 2 else -0.2)) for u in users for p in prompts]
    summary = {"tox_dist": 0.2, "preferred_toxicity": preferred, "tolerated_toxicity": dict.fromkeys(users, 0.1)}
    cells = [cell("b", "unsteered", **summary), cell("s", "guided", 20.0, **(summary | {"tox_dist": steered_tox}))]
    return cells, {"b": base, "s": steered}


def test_the_best_cell_must_keep_its_relevance_collapse_and_utility():
    cells, answers = _cells_and_answers(0.05, 1.0)
    main = main_rows(cells, answers=answers)
    verdict = best_under_guards(main)
    assert verdict.row is not None and verdict.row.method == "guided" and verdict.failed == {}
    cells, answers = _cells_and_answers(0.05, 0.2)  # much less relevant on every row
    verdict = best_under_guards(main_rows(cells, answers=answers))
    assert verdict.row is None and "relevance" in verdict.failed["guided α=20"]
    cells, answers = _cells_and_answers(0.05, 1.0, collapsed=True)  # 1 prompt in 8 loops: 12 % collapsed
    assert "collapsed" in best_under_guards(main_rows(cells, answers=answers)).failed["guided α=20"]
    rows = guard_rows(cells, answers)
    assert {r.scope for r in rows} >= {"all", "harmful_borderline"}
    assert next(r for r in rows if r.method == "guided" and r.scope == "all").figures.violation_share == 0.0  # 0.05 < 0.1


def test_boundary_violations_head_to_head_with_population():
    users = {f"s{i}": "strict" for i in range(4)} | {f"t{i}": "tolerant" for i in range(4)}
    prompts = [f"p{j}" for j in range(6)]
    summary = {"sensitivity_of": users, "preferred_toxicity": dict.fromkeys(users, 0.0),
               "tolerated_toxicity": {u: 0.05 if g == "strict" else 0.5 for u, g in users.items()}}
    population = [record(u, p, f"answer {p}", 0.1) for u in users for p in prompts]
    personal = [record(u, p, f"answer {p} for {u}", 0.02 if users[u] == "strict" else 0.1) for u in users for p in prompts]
    rows = head_to_head([cell("pop", "caa-population", 0.5, **summary), cell("me", "caa-dislike", 0.5, **summary)],
                        {"pop": population, "me": personal})
    strict = next(r for r in rows if r.group == "strict")
    assert strict.violation_share == 0.0 and strict.population_violation_share == 1.0
    assert strict.violation_diff == pytest.approx(-1.0) and strict.violation_diff_ci[1] < 0
    tolerant = next(r for r in rows if r.group == "tolerant")
    assert tolerant.violation_diff == 0.0
