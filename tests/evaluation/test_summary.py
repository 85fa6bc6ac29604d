"""Cell summaries through the store: typed in, typed out, and stores written as plain dicts still read."""

import json
import math
import sqlite3

import pytest

from steer_away.evaluation.store import CellSpec, MMLURecord, ResultsStore
from steer_away.evaluation.summary import CellSummary, SummaryFormatError, summarise
from tests.evaluation.report.cells import record

# a summary exactly as the code before CellSummary wrote it (a dict, NaN where nothing was measured), from the
# time utility was called MMLU and always asked in letter format
OLD_ROW = ('{"n": 2, "users": 2, "mae": 0.15, "mae_by_category": {"benign_control": 0.15}, '
           '"mae_by_sensitivity": {"strict": 0.1, "tolerant": 0.2}, "tox_dist": 0.25, '
           '"tox_dist_by_category": {"benign_control": 0.25}, "tox_dist_by_sensitivity": {"strict": 0.2}, '
           '"preferred_toxicity": {"a": 0.1, "b": 0.0}, "sensitivity_of": {"a": "strict", "b": "tolerant"}, '
           '"toxicity_by_sensitivity": {"strict": 0.3}, "ppl_mean": NaN, "ppl_median": NaN, "empty_answers": 0, '
           '"mean_tokens": 10.0, "toxicity_mean": 0.3, "mmlu_n": 0, "mmlu_acc": NaN, "mmlu_ci": [NaN, NaN], '
           '"mmlu_letter_mass": NaN}')


def same(a: CellSummary, b: CellSummary) -> bool:
    """Field by field, NaN equal to NaN."""
    return json.dumps(a.to_dict()) == json.dumps(b.to_dict())


def test_summary_round_trips_through_the_store(tmp_path):
    answers = [record("a", "p1", "fine", 0.3, "benign_control", 0.1),
               record("b", "p1", "also fine", 0.2, "benign_control", 0.2)]
    mmlu = [MMLURecord("q1", "a", 0, True, 0.9), MMLURecord("q2", "b", 1, False, 0.7)]
    summary = summarise(answers, mmlu, {"a": "strict", "b": "tolerant"}, {"a": 0.1, "b": 0.0}, utility_format="letter")
    assert summary.mae == pytest.approx(0.15) and summary.tox_dist == pytest.approx((0.2 + 0.2) / 2)
    assert summary.utility_acc == 0.5 and isinstance(summary.utility_ci, tuple)
    assert summary.utility_letter_mass == pytest.approx(0.8) and summary.utility_format == "letter"
    store = ResultsStore(tmp_path / "r.sqlite")
    store.register_cell("k", "eads", 1.0, "", CellSpec("fp", {"alpha": 1.0}, "eads α=1"))
    assert store.cells() == [] and store.cells(only_done=False)[0].summary is None
    store.finish_cell("k", summary)
    (stored,) = store.cells()
    assert stored.spec == CellSpec("fp", {"alpha": 1.0}, "eads α=1") and stored.status == "done"
    assert same(stored.done_summary, summary)
    assert stored.done_summary.utility_ci == summary.utility_ci  # the interval comes back as a tuple
    assert store.answers("k") == [] and answers[0].attribute_mae == 0.1


def test_a_store_written_with_plain_dict_summaries_still_reads(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path).close()
    with sqlite3.connect(path) as con:
        con.execute("INSERT INTO cells VALUES ('k', 'unsteered', NULL, '', ?, 'done', ?, 1.0)",
                    ('{"args": {}, "fingerprint": "fp", "label": "unsteered"}', OLD_ROW))
        con.execute("INSERT INTO answers (cell, row_id, user_id, prompt_id, category, prompt, answer, toxicity, "
                    "distance, perplexity, n_tokens, run_id, created_at) VALUES ('k', 'a|p1', 'a', 'p1', "
                    "'benign_control', 'hi', 'hello', '[0.3, 0, 0, 0, 0, 0]', 0.1, NULL, 3, 'run', 1.0)")
    store = ResultsStore(path, create=False)
    (cell,) = store.cells()
    summary = cell.done_summary
    assert cell.spec.fingerprint == "fp" and cell.alpha is None
    assert summary.tox_dist == 0.25 and summary.sensitivity_of == {"a": "strict", "b": "tolerant"}
    assert math.isnan(summary.utility_acc) and all(math.isnan(v) for v in summary.utility_ci)
    assert summary.utility_format == "letter"  # every store before cloze scoring asked for letters
    # the same JSON, key for key, under the new names
    renamed = OLD_ROW.replace('"mmlu_', '"utility_')[:-1] + ', "utility_format": "letter"'
    assert json.dumps(summary.to_dict()) == renamed + (', "seconds_per_answer": NaN, "timed_runs": [], '  # not timed
                                                       '"tolerated_toxicity": {}}')  # nor tolerances known
    (answer,) = store.answers("k")
    assert answer.attribute_mae == 0.1 and math.isnan(answer.perplexity)


def test_keys_added_later_are_optional_and_unknown_keys_are_refused():
    first = {k: v for k, v in json.loads(OLD_ROW).items()
             if k in ("n", "users", "mae", "mae_by_category", "ppl_mean", "ppl_median", "empty_answers", "mean_tokens",
                      "toxicity_mean", "mmlu_n", "mmlu_acc", "mmlu_ci")}  # what the first stores held
    summary = CellSummary.from_dict(first)
    assert math.isnan(summary.tox_dist) and summary.preferred_toxicity == {}
    assert summary.headline_distance == 0.15  # no TOXICITY distance recorded: the MAE
    with pytest.raises(SummaryFormatError, match=r"unknown keys \['distance'\]"):
        CellSummary.from_dict(first | {"distance": 0.1})
    with pytest.raises(SummaryFormatError, match="mae"):
        CellSummary.from_dict({k: v for k, v in first.items() if k != "mae"})


def test_cloze_summary_records_its_format_and_no_letter_mass():
    answers = [record("a", "p1", "fine", 0.3, "benign_control", 0.1)]
    utility = [MMLURecord("q1", "a", 2, True), MMLURecord("q2", "a", 0, True), MMLURecord("q3", "a", 1, False)]
    summary = summarise(answers, utility, utility_format="cloze")
    assert summary.utility_n == 3 and summary.utility_acc == pytest.approx(2 / 3)
    assert summary.utility_format == "cloze" and math.isnan(summary.utility_letter_mass)
    assert CellSummary.from_dict(json.loads(json.dumps(summary.to_dict()))).utility_format == "cloze"
