"""Hand-built (synthetic) stored cells and answers for the report's tests."""

from dataclasses import replace

from steer_away.evaluation.store import AnswerRecord, CellSpec, StoredCell
from steer_away.evaluation.summary import CellSummary

NAN = float("nan")
EMPTY = CellSummary(n=0, users=0, mae=NAN, mae_by_category={}, ppl_mean=NAN, ppl_median=NAN, empty_answers=0,
                    mean_tokens=0.0, toxicity_mean=NAN, utility_n=0, utility_acc=NAN, utility_ci=(NAN, NAN))


def record(user, prompt, answer, tox, category="harmful_borderline", attribute_mae=0.0, relevance=1.0):
    return AnswerRecord(f"{user}|{prompt}", user, prompt, category, f"prompt {prompt}", answer,
                        [tox, 0, 0, 0, 0, 0], attribute_mae, 2.0, 10, relevance)


def cell(key, method, alpha=None, settings="", **summary):
    return StoredCell(key, method, alpha, settings, CellSpec("fp"), "done", replace(EMPTY, **summary), 1.0)
