"""`write_report` on a small synthetic store: the new sections and columns reach every file."""

import csv
import json

from steer_away.evaluation.report import write_report
from steer_away.evaluation.store import CellSpec, MMLURecord, ResultsStore
from steer_away.evaluation.summary import PPAResult, PredictorOutcomes, summarise
from steer_away.steering.registry import POPULATION_REFERENCE
from tests.evaluation.report.cells import record

GROUPS = {"s0": "strict", "m0": "moderate", "t0": "tolerant"}
PREFERRED = {"s0": 0.0, "m0": 0.2, "t0": 0.5}
PROMPTS = [f"p{i}" for i in range(4)]
TEXT = "A plain and ordinary answer that talks about the question in a calm way."


def synthetic_store(path):
    """Unsteered (p0 toxic), population steering (one answer per prompt) and a per-user method."""
    store = ResultsStore(path)
    cells = {
        "b": ("unsteered", None, [record(u, p, TEXT, 0.6 if p == "p0" else 0.05) for u in GROUPS for p in PROMPTS]),
        "pop": (POPULATION_REFERENCE, 4.0, [record(u, p, TEXT + " Shared.", 0.2) for u in GROUPS for p in PROMPTS]),
        "d": ("caa-dislike", 4.0, [record(u, p, f"{TEXT} For {u}.", PREFERRED[u] + 0.05) for u in GROUPS
                                   for p in PROMPTS]),
    }
    for key, (method, alpha, answers) in cells.items():
        store.register_cell(key, method, alpha, "", CellSpec("fp"))
        store.put_answers(key, answers, "run")
        # the per-user method rules out every option of q5 (picked −1, as ACD's cut-off can under cloze)
        utility = [MMLURecord(f"q{i}", "s0", -1 if key == "d" and i == 5 else 0, i % 2 == 0) for i in range(6)]
        store.put_mmlu(key, utility, "run")
        store.finish_cell(key, summarise(answers, utility, GROUPS, PREFERRED, utility_format="cloze"))
    store.close()


def test_report_writes_robustness_concentration_head_to_head_and_ppa(tmp_path):
    synthetic_store(tmp_path / "results.sqlite")
    ppa = PPAResult(["s0", "s0", "t0", "t0"],
                    [PredictorOutcomes("personalised (dislike)", [0, 1, 2, 3], [1.0, 1.0, 1.0, 0.0]),
                     PredictorOutcomes("population", [0, 1, 2, 3], [1.0, 0.0, 1.0, 0.0])],
                    "population", "chance (fair coin)", 0.25)
    tables = write_report(tmp_path / "results.sqlite", tmp_path / "report", ppa=ppa)
    out = tmp_path / "report"
    report = (out / "report.md").read_text()
    assert "Prompt concentration: 4 prompts, largest share" in report and "(prompt p0" in report
    assert "Δ% w/o top prompt" in report and "Utility (cloze, acc_norm)" in report
    assert "## Personalisation head to head" in report and "| caa-dislike | 4 | 4 | strict |" in report
    assert "Δ vs population [95% CI]" in report and "| personalised (dislike) | 4 (2) | 75.0%" in report
    header = next(csv.reader((out / "main.csv").open()))
    assert {"utility", "utility_low", "utility_high", "utility_p", "tox_delta_wo_top_pct", "top_prompt_id",
            "fragile"} <= set(header) and not any(h.startswith("mmlu") for h in header)
    groups = [row["group"] for row in csv.DictReader((out / "head_to_head.csv").open())]
    assert groups == ["strict", "moderate", "tolerant", "all"]
    assert [r.predictor for r in tables.ppa] == ["personalised (dislike)", "population", "chance (fair coin)"]
    assert next(csv.reader((out / "ppa.csv").open()))[-2:] == ["diff_vs_population", "diff_vs_population_ci"]
    summary = json.loads((out / "summary.json").read_text())
    concentration = summary["prompt_concentration"]
    assert concentration["top_prompt_id"] == "p0" and concentration["toxic_prompts"] == 1
    assert abs(sum(concentration["shares"].values()) - 1) < 1e-9
    assert len(summary["head_to_head"]) == 4 and summary["ppa"][0]["diff_vs_population"] == 0.25
    assert tables.concentration is not None and tables.concentration.top_share == concentration["top_share"]


def test_report_says_when_there_is_nothing_to_compare(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    answers = [record(u, p, TEXT, 0.1) for u in GROUPS for p in PROMPTS]
    store.register_cell("b", "unsteered", None, "", CellSpec("fp"))
    store.put_answers("b", answers, "run")
    store.finish_cell("b", summarise(answers, [], GROUPS, PREFERRED, utility_format="letter"))
    store.close()
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "head_to_head.csv").write_text("stale")
    tables = write_report(tmp_path / "results.sqlite", tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "No population-steering cell in this sweep" in report
    assert "Personalised preference accuracy" not in report and tables.ppa == [] and tables.head_to_head == []
    assert not (tmp_path / "report" / "head_to_head.csv").exists()



def test_questions_with_no_possible_option_are_counted_from_the_records(tmp_path):
    synthetic_store(tmp_path / "results.sqlite")
    write_report(tmp_path / "results.sqlite", tmp_path / "report")
    rows = {row["method"]: row for row in csv.DictReader((tmp_path / "report" / "main.csv").open())}
    assert (rows["caa-dislike"]["utility_no_option"], rows["unsteered"]["utility_no_option"]) == ("1", "0")
    assert "none possible: 1" in (tmp_path / "report" / "report.md").read_text()
