"""The command line's short main table, from the report's typed rows."""

from steer_away.cli.tables import print_main_table, print_ppa_table
from steer_away.evaluation.report.analysis import main_rows
from steer_away.evaluation.summary import PPARow
from tests.evaluation.report.cells import cell


def test_main_table_prints_one_line_per_cell(capsys):
    rows = main_rows([cell("b", "unsteered", mae=0.2, tox_dist=0.1),
                      cell("s", "eads", 1.5, mae=0.1, tox_dist=0.08, utility_acc=0.5)])
    print_main_table(rows, "t")
    out = capsys.readouterr().err  # the console writes to stderr
    baseline = next(line for line in out.splitlines() if "unsteered" in line)
    eads = next(line for line in out.splitlines() if "eads" in line)
    assert "0.1000" in baseline and "0.2000" in baseline
    assert "1.5" in eads and "-20.0%" in eads and "50.0%" in eads and "0.0800" in eads


def test_ppa_table_prints_accuracy_interval_and_difference(capsys):
    print_ppa_table([PPARow("population", 10, 3, 0.5, (0.3, 0.7)),
                     PPARow("personalised (bt)", 10, 3, 0.6, (0.4, 0.8), 0.1, (-0.05, 0.25))])
    out = capsys.readouterr().err
    population = next(line for line in out.splitlines() if line.startswith("│ population"))
    personal = next(line for line in out.splitlines() if "personalised (bt)" in line)
    assert "50.0% [30.0, 70.0]" in population and population.rstrip(" │").endswith("-")
    assert "60.0% [40.0, 80.0]" in personal and "+10.0 [-5.0, +25.0]" in personal
    print_ppa_table([])
    assert capsys.readouterr().err == ""  # no PPA (skipped): no table
