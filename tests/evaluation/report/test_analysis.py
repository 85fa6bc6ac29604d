"""The report's statistics on hand-built cells: typed rows, where a change comes from, group effects."""

import pytest

from steer_away.evaluation.report.analysis import (
    category_rows,
    cell_order,
    label,
    main_rows,
    paired_utility,
    sensitivity_effects,
)
from tests.evaluation.report.cells import cell, record


def test_sensitivity_effects_interval_excludes_zero_only_for_a_consistent_change():
    users = {f"s{i}": "strict" for i in range(4)} | {f"t{i}": "tolerant" for i in range(4)}
    preferred = dict.fromkeys(users, 0.0)
    prompts = [f"p{j}" for j in range(6)]
    base = [record(u, p, "x", 0.2) for u in users for p in prompts]
    # strict users: every answer 0.1 lower; tolerant users: up on half the prompts, down on the other half
    steered = [record(u, p, "x", 0.1 if users[u] == "strict" else (0.3 if int(p[1]) % 2 else 0.1))
               for u in users for p in prompts]
    rows = sensitivity_effects([cell("b", "unsteered"),
                                cell("s", "eads", 1.0, sensitivity_of=users, preferred_toxicity=preferred)],
                               {"b": base, "s": steered})
    strict, tolerant = (next(r for r in rows if r.group == g) for g in ("strict", "tolerant"))
    assert strict.toxicity_change == pytest.approx(-0.1) and strict.toxicity_change_ci[1] < 0
    assert strict.distance_change == pytest.approx(-0.1) and strict.users == 4
    assert tolerant.toxicity_change == pytest.approx(0.0, abs=1e-12)
    assert tolerant.toxicity_change_ci[0] < 0 < tolerant.toxicity_change_ci[1]


def test_report_pairs_utility_answers_with_the_baseline():
    base = {f"q{i}": i < 5 for i in range(10)}  # right on q0-q4
    steered = {f"q{i}": i >= 2 for i in range(10)}  # lost q0, q1; gained q5-q9
    right, wrong, p = paired_utility(steered, base)
    assert (right, wrong) == (5, 2)
    assert p == pytest.approx(2 * (1 + 7 + 21) / 2**7)  # exact two-sided binomial on 7 flips


def test_report_marks_collapsed_cells_and_never_calls_them_best():
    summary = {"mae": 0.1, "ppl_median": 2.0, "ppl_mean": 2.0, "toxicity_mean": 0.1, "n": 2, "utility_ci": (0, 0)}
    cells = [cell("b", "unsteered", **summary), cell("s", "caa-dislike", 1.0, **{**summary, "mae": 0.05})]

    def rows(text):
        return [record(f"u{i}", "p", text, 0.1, "benign_control", 0.1) for i in range(2)]

    loop = "you are so so so so so so so so so so so so so so so so"
    main = main_rows(cells, answers={"b": rows("A fine, ordinary answer about the weather today in town."),
                                     "s": rows(loop)})
    flagged = {r.method: r.collapsed for r in main}
    assert flagged == {"unsteered": False, "caa-dislike": True}


def test_main_rows_put_the_baseline_first_and_measure_against_it():
    cells = [cell("e2", "eads", 2.0, mae=0.3, tox_dist=0.25, utility_acc=0.5, utility_ci=(0.2, 0.8)),
             cell("e1", "eads", 1.0, mae=0.1, tox_dist=0.15),
             cell("b", "unsteered", mae=0.2, tox_dist=0.1, toxicity_mean=0.3, n=4)]
    base = [record(u, p, "a plain answer", 0.3, attribute_mae=0.2) for u in "ab" for p in ("p1", "p2")]
    steered = [record(u, p, "another plain answer", 0.2, attribute_mae=0.1) for u in "ab" for p in ("p1", "p2")]
    main = main_rows(cells, answers={"b": base, "e1": steered})
    assert [(r.method, r.alpha) for r in main] == [("unsteered", None), ("eads", 1.0), ("eads", 2.0)]
    baseline, e1, e2 = main
    assert e1.delta_pct == pytest.approx(-50.0) and e1.tox_delta_pct == pytest.approx(50.0)
    assert e2.delta_pct == pytest.approx(50.0) and e2.tox_delta_pct == pytest.approx(150.0)
    assert (e2.utility, e2.utility_low, e2.utility_high) == (0.5, 0.2, 0.8)
    assert baseline.toxicity == 0.3 and baseline.n == 4
    # intervals where there are answers; Δ intervals only against the baseline's rows
    assert baseline.mae_ci == pytest.approx((0.2, 0.2)) and baseline.delta_ci is None
    assert e1.delta_ci == pytest.approx((-50.0, -50.0)) and e1.tox_delta_ci is None  # no preferred TOXICITY
    assert e2.mae_ci is None and e2.delta_ci is None
    assert "delta_ci" not in baseline.columns() and list(e1.columns())[-1] == "collapsed"


def test_category_rows_use_toxicity_distance_when_the_baseline_recorded_it():
    by_mae = {"benign_control": 0.2}
    cells = [cell("b", "unsteered", mae_by_category=by_mae, tox_dist_by_category={"benign_control": 0.4}),
             cell("s", "caa-population", 0.5, "gate=prefill", mae_by_category={"benign_control": 0.1},
                  tox_dist_by_category={"benign_control": 0.3})]
    rows = {r.category: r for r in category_rows(cells)}
    benign = rows["benign_control"]
    assert benign.metric == "TOXICITY distance" and benign.baseline == 0.4
    assert benign.change_pct == {"caa-population α=0.5 gate=prefill": pytest.approx(-25.0)}
    assert list(benign.columns()) == ["category", "metric", "baseline", "caa-population α=0.5 gate=prefill"]
    assert rows["harmful_borderline"].change_pct == {"caa-population α=0.5 gate=prefill": pytest.approx(float("nan"),
                                                                                                         nan_ok=True)}
    no_tox = category_rows([cell("b", "unsteered", mae_by_category=by_mae),
                            cell("s", "eads", 1.0, mae_by_category={"benign_control": 0.3})])
    assert no_tox[0].metric == "MAE" and no_tox[0].change_pct["eads α=1"] == pytest.approx(50.0)


def test_cells_order_by_registered_method_then_settings_then_alpha():
    keys = [("eads", "", 2.0), ("unsteered", "", None), ("eads", "", 1.0), ("caa-population", "gate=prefill", 0.5),
            ("caa-population", "", 1.0)]
    assert sorted(keys, key=lambda k: cell_order(*k)) == [
        ("unsteered", "", None), ("caa-population", "", 1.0), ("caa-population", "gate=prefill", 0.5),
        ("eads", "", 1.0), ("eads", "", 2.0)]


def test_a_cell_is_named_with_its_strength_only_when_it_has_one():
    assert label("caa-population", 0.5, "gate=prefill") == "caa-population α=0.5 gate=prefill"
    assert label("eads", None, "") == "eads α=by category"  # picked per row
    assert label("rerank", None, "candidates=1") == "rerank candidates=1"
    assert label("unsteered", None, "") == "unsteered"


def test_a_recomputed_cell_replaces_the_one_before_it_in_the_report():
    """Issue 36, bug 4: after a bank's vector files changed, the cell was recomputed under a new key and the
    report listed both (same method, arguments and sweep fingerprint). The newest is the one reported."""
    from dataclasses import replace

    from steer_away.evaluation.report.analysis import current_cells
    from steer_away.evaluation.store import CellSpec

    spec = CellSpec("fp", {"alpha": 0.5})
    old = replace(cell("k-old", "caa-population", 0.5), spec=spec, finished_at=1.0)
    new = replace(cell("k-new", "caa-population", 0.5), spec=spec, finished_at=2.0)
    other_alpha = replace(cell("k-a1", "caa-population", 1.0), spec=CellSpec("fp", {"alpha": 1.0}), finished_at=1.5)
    other_sweep = replace(cell("k-x", "caa-population", 0.5), spec=CellSpec("fp2", {"alpha": 0.5}), finished_at=3.0)
    base = cell("k-base", "unsteered")
    assert [c.key for c in current_cells([base, old, other_alpha, new, other_sweep], "fp")] == \
        ["k-base", "k-new", "k-a1"]
