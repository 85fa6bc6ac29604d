"""The command line's short main table, from the report's typed rows."""

from steer_away.cli.tables import print_main_table
from steer_away.evaluation.report.analysis import main_rows
from tests.evaluation.report.cells import cell


def test_main_table_prints_one_line_per_cell(capsys):
    rows = main_rows([cell("b", "unsteered", mae=0.2, tox_dist=0.1),
                      cell("s", "eads", 1.5, mae=0.1, tox_dist=0.08, mmlu_acc=0.5)])
    print_main_table(rows, "t")
    out = capsys.readouterr().err  # the console writes to stderr
    baseline = next(line for line in out.splitlines() if "unsteered" in line)
    eads = next(line for line in out.splitlines() if "eads" in line)
    assert "0.1000" in baseline and "0.2000" in baseline
    assert "1.5" in eads and "-20.0%" in eads and "50.0%" in eads and "0.0800" in eads
