"""The report's Markdown: the study's colour bins and the tables' cells."""

import pytest

from steer_away.evaluation.report.analysis import category_rows, main_rows
from steer_away.evaluation.report.markdown import category_table_markdown, change_bin, main_table_markdown
from tests.evaluation.report.cells import cell


@pytest.mark.parametrize("pct, marker", [(-2.0, "⬜"), (4.9, "⬜"), (-9.0, "🟨"), (-15.0, "🟩"), (-40.0, "🟩"),
                                         (7.0, "🟧"), (15.0, "🟥"), (float("nan"), "⬜")])
def test_change_bins_follow_the_study(pct, marker):
    assert change_bin(pct) == marker


def test_tables_show_alpha_settings_and_the_change_against_the_baseline():
    cells = [cell("b", "unsteered", mae=0.2, tox_dist=0.1, mae_by_category={"benign_control": 0.2}),
             cell("s", "eads", 1.5, "gate=prefill", mae=0.1, tox_dist=0.08, mae_by_category={"benign_control": 0.1})]
    lines = main_table_markdown(main_rows(cells)).splitlines()
    assert lines[2].startswith("| unsteered | - | - | 0.1000 | - | - | 0.2000 | - |")
    assert lines[3].startswith("| eads | 1.5 | gate=prefill | 0.0800 | -20.0% | - | 0.1000 | -50.0% |")
    table = category_table_markdown(category_rows(cells))
    assert "| category | baseline MAE | eads α=1.5 gate=prefill |" in table
    assert "| benign_control | 0.2000 | 🟩 -50.0% |" in table
