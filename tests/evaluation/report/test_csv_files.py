"""The report's CSV files keep the columns users read, in their order."""

import csv

from steer_away.evaluation.report.csv_files import write_csv, write_ppa_csv
from steer_away.evaluation.summary import ChangeSourceRow, MainRow

NAN = float("nan")


def main_row(method, **intervals):
    return MainRow(method, None, "", 0.1, NAN, 0.2, NAN, 2.0, 2.1, NAN, NAN, NAN, 0.3, 4, 0, NAN, 0, 0, NAN, 0.9, 0.0,
                   **intervals)


def test_main_csv_header_lists_every_column_once_in_first_seen_order(tmp_path):
    rows = [main_row("unsteered", mae_ci=(0.1, 0.3)), main_row("eads", mae_ci=(0.1, 0.2), delta_ci=(-5.0, 1.0))]
    write_csv(tmp_path / "main.csv", rows)
    header, baseline, eads = list(csv.reader((tmp_path / "main.csv").open()))
    assert header == ["method", "alpha", "settings", "tox_dist", "tox_delta_pct", "mae", "delta_pct", "ppl",
                      "ppl_mean", "mmlu", "mmlu_low", "mmlu_high", "toxicity", "n", "empty", "mmlu_letter_mass",
                      "mmlu_turned_right", "mmlu_turned_wrong", "mmlu_mcnemar_p", "distinct2", "collapsed_share",
                      "mae_ci", "collapsed", "delta_ci"]
    assert baseline[1] == "" and baseline[-3:] == ["[0.1, 0.3]", "False", ""]
    assert eads[-1] == "[-5.0, 1.0]"


def test_no_rows_no_file_and_ppa_rows(tmp_path):
    write_csv(tmp_path / "none.csv", list[ChangeSourceRow]())
    assert not (tmp_path / "none.csv").exists()
    write_ppa_csv(tmp_path / "ppa.csv", {"pairs": 10.0, "population": 0.55})
    assert (tmp_path / "ppa.csv").read_bytes() == b"predictor,value\r\npairs,10.0\r\npopulation,0.55\r\n"
