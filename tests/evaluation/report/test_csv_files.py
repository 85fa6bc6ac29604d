"""The report's CSV files keep the columns users read, in their order (synthetic rows)."""

import csv

from steer_away.evaluation.metrics.base import MetricFigures
from steer_away.evaluation.metrics.registry import report_metrics
from steer_away.evaluation.report.csv_files import write_csv
from steer_away.evaluation.report.rows import ChangeSourceRow, MainRow, MetricColumn, PPARow

NAN = float("nan")


def main_row(method, **intervals):
    return MainRow(method, None, "", 0.1, NAN, NAN, "", "", False, 0.2, NAN, 2.0, 2.1, NAN, NAN, NAN, 0.3, 4, 0, NAN, 0,
                   0, 0, NAN, 0.9, 0.0, NAN, False, **intervals,
                   metrics=tuple(MetricColumn(m, MetricFigures(NAN)) for m in report_metrics()))


def test_main_csv_header_lists_every_column_once_in_first_seen_order(tmp_path):
    rows = [main_row("unsteered", mae_ci=(0.1, 0.3)),
            main_row("eads", mae_ci=(0.1, 0.2), delta_ci=(-5.0, 1.0), tox_delta_wo_top_ci=(-9.0, 3.0))]
    write_csv(tmp_path / "main.csv", rows)
    header, baseline, eads = list(csv.reader((tmp_path / "main.csv").open()))
    assert header == ["method", "alpha", "settings", "tox_dist", "tox_delta_pct", "tox_delta_wo_top_pct",
                      "top_prompt_id", "top_prompt", "fragile", "mae", "delta_pct", "ppl", "ppl_mean", "utility",
                      "utility_low", "utility_high", "toxicity", "n", "empty", "utility_letter_mass",
                      "utility_no_option", "utility_turned_right", "utility_turned_wrong", "utility_p", "distinct2",
                      "collapsed_share", "cost_ratio", "cost_same_run", "relevance", "relevance_delta", "refusal_share",
                      "violation_share", "tokens", "tokens_delta", "mae_ci", "collapsed", "delta_ci",
                      "tox_delta_wo_top_ci"]
    assert baseline[1] == "" and baseline[-4:] == ["[0.1, 0.3]", "False", "", ""]
    assert eads[-2:] == ["[-5.0, 1.0]", "[-9.0, 3.0]"]


def test_no_rows_no_file_and_a_stale_one_is_removed(tmp_path):
    write_csv(tmp_path / "none.csv", list[ChangeSourceRow]())
    assert not (tmp_path / "none.csv").exists()
    (tmp_path / "ppa.csv").write_text("from an earlier report")
    write_csv(tmp_path / "ppa.csv", list[PPARow]())
    assert not (tmp_path / "ppa.csv").exists()


def test_ppa_csv_has_accuracy_interval_and_difference_columns(tmp_path):
    write_csv(tmp_path / "ppa.csv", [PPARow("population", 10, 3, 0.55, (0.4, 0.7)),
                                     PPARow("personalised (bt)", 10, 3, 0.6, (0.5, 0.7), 0.05, (-0.1, 0.2))])
    assert (tmp_path / "ppa.csv").read_text().splitlines() == [
        "predictor,pairs,users,accuracy,accuracy_ci,diff_vs_population,diff_vs_population_ci",
        "population,10,3,0.55,\"[0.4, 0.7]\",,", "personalised (bt),10,3,0.6,\"[0.5, 0.7]\",0.05,\"[-0.1, 0.2]\""]
