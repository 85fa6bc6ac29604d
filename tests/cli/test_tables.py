"""The command line's short main table, from the report's typed rows."""

from steer_away.cli.tables import print_main_table, print_ppa_table
from steer_away.evaluation.report.analysis import main_rows
from steer_away.evaluation.report.rows import PPARow
from tests.evaluation.report.cells import cell


def test_main_table_prints_one_line_per_cell(capsys, monkeypatch):
    from steer_away.console import results
    from tests.evaluation.report.cells import record

    monkeypatch.setattr(results, "width", 220)  # a wide terminal: no header cut short

    answers = {"b": [record("u", "p1", "An answer.", 0.1), record("u", "p2", "Another answer.", 0.1)],
               "s": [record("u", "p1", "I'm sorry, but I can't help with that.", 0.0, relevance=0.0),
                     record("u", "p2", "Another answer.", 0.2, relevance=0.5)]}
    summary = {"tolerated_toxicity": {"u": 0.15}}
    rows = main_rows([cell("b", "unsteered", mae=0.2, tox_dist=0.1, **summary),
                      cell("s", "eads", 1.5, mae=0.1, tox_dist=0.08, utility_acc=0.5, **summary)], answers=answers)
    print_main_table(rows, "t")
    out = capsys.readouterr().out  # results go to stdout
    baseline = next(line for line in out.splitlines() if "unsteered" in line)
    eads = next(line for line in out.splitlines() if "eads" in line)
    assert "0.1000" in baseline and "0%" in baseline  # no answer refused, none over its user's tolerance
    assert "1.5" in eads and "-20.0%" in eads and "50.0%" in eads and "0.0800" in eads
    assert "-0.75" in eads and "50%" in eads  # relevance 0.25 against 1.0; one refusal and one violation in two
    assert "settings" not in out  # no cell has any: no column for them
    print_main_table(main_rows([cell("b", "unsteered", mae=0.2, tox_dist=0.1, **summary),
                                cell("s", "eads", 1.5, settings="gate=prefill", mae=0.1, tox_dist=0.08, **summary)],
                               answers=answers), "t")
    out = capsys.readouterr().out
    assert "settings" in out and "gate=prefill" in out


def test_ppa_table_prints_accuracy_interval_and_difference(capsys):
    print_ppa_table([PPARow("population", 10, 3, 0.5, (0.3, 0.7)),
                     PPARow("personalised (bt)", 10, 3, 0.6, (0.4, 0.8), 0.1, (-0.05, 0.25))])
    out = capsys.readouterr().out
    population = next(line for line in out.splitlines() if line.startswith("│ population"))
    personal = next(line for line in out.splitlines() if "personalised (bt)" in line)
    assert "50.0% [30.0, 70.0]" in population and population.rstrip(" │").endswith("-")
    assert "60.0% [40.0, 80.0]" in personal and "+10.0 [-5.0, +25.0]" in personal
    print_ppa_table([])
    assert capsys.readouterr().out == ""  # no PPA (skipped): no table


def test_report_prints_results_on_stdout_and_json_a_program_can_read(tmp_path, capsys):
    """`steer-away report`: the table and the report's path on stdout (so `> file` keeps them), nothing of
    them on stderr; `--json` gives every main-table column, unmeasured figures as null."""
    import json

    from steer_away.cli import main
    from tests.evaluation.report.test_writer import synthetic_store

    synthetic_store(tmp_path / "results.sqlite")
    assert main(["report", "--store", str(tmp_path / "results.sqlite")]) == 0
    captured = capsys.readouterr()
    assert "caa-dislike" in captured.out and "report: " in captured.out and "caa-dislike" not in captured.err
    assert main(["report", "--store", str(tmp_path / "results.sqlite"), "--json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text  # strict JSON: most readers refuse NaN
    printed = json.loads(text)
    by_method = {row["method"]: row for row in printed["main"]}
    assert set(by_method) == {"unsteered", "caa-population", "caa-dislike"} and printed["ppa"] == []
    assert by_method["unsteered"]["tox_delta_pct"] == 0.0 and by_method["unsteered"]["relevance_delta"] is None
    assert by_method["caa-dislike"]["tox_dist"] > 0 and printed["report"].endswith("report.md")
