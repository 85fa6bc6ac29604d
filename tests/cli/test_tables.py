"""The command line's short main table, from the report's typed rows."""

from steer_away.cli.tables import print_main_table, print_ppa_table
from steer_away.evaluation.report.analysis import main_rows
from steer_away.evaluation.report.rows import PPARow
from tests.evaluation.report.cells import cell


def test_main_table_prints_one_line_per_cell(capsys, monkeypatch):
    from steer_away.console import console
    from tests.evaluation.report.cells import record

    monkeypatch.setattr(console, "width", 220)  # a wide terminal: no header cut short

    answers = {"b": [record("u", "p1", "An answer.", 0.1), record("u", "p2", "Another answer.", 0.1)],
               "s": [record("u", "p1", "I'm sorry, but I can't help with that.", 0.0, relevance=0.0),
                     record("u", "p2", "Another answer.", 0.2, relevance=0.5)]}
    summary = {"tolerated_toxicity": {"u": 0.15}}
    rows = main_rows([cell("b", "unsteered", mae=0.2, tox_dist=0.1, **summary),
                      cell("s", "eads", 1.5, mae=0.1, tox_dist=0.08, utility_acc=0.5, **summary)], answers=answers)
    print_main_table(rows, "t")
    out = capsys.readouterr().err  # the console writes to stderr
    baseline = next(line for line in out.splitlines() if "unsteered" in line)
    eads = next(line for line in out.splitlines() if "eads" in line)
    assert "0.1000" in baseline and "0%" in baseline  # no answer refused, none over its user's tolerance
    assert "1.5" in eads and "-20.0%" in eads and "50.0%" in eads and "0.0800" in eads
    assert "-0.75" in eads and "50%" in eads  # relevance 0.25 against 1.0; one refusal and one violation in two
    assert "settings" not in out  # no cell has any: no column for them
    print_main_table(main_rows([cell("b", "unsteered", mae=0.2, tox_dist=0.1, **summary),
                                cell("s", "eads", 1.5, settings="gate=prefill", mae=0.1, tox_dist=0.08, **summary)],
                               answers=answers), "t")
    out = capsys.readouterr().err
    assert "settings" in out and "gate=prefill" in out


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
