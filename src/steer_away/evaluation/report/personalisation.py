"""Is personalisation better than steering everyone alike? Methods whose answers depend on the user
against population steering on the same rows, and each PPA predictor against the population one on the
same held-out pairs, with intervals.

A method beats population steering only where the paired difference's interval excludes zero; an
accuracy or distance that merely looks higher is not evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from steer_away.evaluation.metrics.functions import user_bootstrap
from steer_away.evaluation.report.analysis import Answers, ordered, paired_comparison
from steer_away.evaluation.report.rows import HeadToHeadRow, PPARow
from steer_away.evaluation.store import AnswerRecord, StoredCell
from steer_away.evaluation.summary import NAN, Interval, PPAResult
from steer_away.profiles import SENSITIVITIES
from steer_away.steering.registry import BASELINE, POPULATION_REFERENCE, get_method

ALL_USERS = "all"


def depends_on_user(answers: Sequence[AnswerRecord]) -> bool:
    """Whether some prompt got different answer texts for different users: read from the answers, not
    from what the method claims, so a personalised method that answers everyone alike is not compared."""
    texts: dict[str, set[str]] = {}
    for a in answers:
        texts.setdefault(a.prompt_id, set()).add(a.answer)
    return any(len(t) > 1 for t in texts.values())


def population_reference(cells: Sequence[StoredCell]) -> StoredCell | None:
    """The population cell to compare with: the one at the method's default strength without other
    settings, else the one closest to the users (the strongest competitor); None when there is none."""
    population = [c for c in ordered(cells) if c.method == POPULATION_REFERENCE]
    default = get_method(POPULATION_REFERENCE).default_strength
    at_default = [c for c in population if c.alpha == default and not c.settings]
    if at_default:
        return at_default[0]
    return min(population, key=lambda c: c.done_summary.headline_distance, default=None)


def head_to_head(cells: Sequence[StoredCell], answers: Answers) -> list[HeadToHeadRow]:
    """Per cell whose answers depend on the user, per sensitivity group and for all users: TOXICITY distance
    and mean TOXICITY against the population cell on the same rows (cell − population), with user- and
    prompt-clustered 95 % intervals. Empty without a population cell or a user-dependent cell."""
    reference = population_reference(cells)
    if reference is None:
        return []
    population = {a.row_id: a for a in answers.get(reference.key, [])}
    out = []
    for c in ordered(cells):
        rows = answers.get(c.key, [])
        if c.method in (BASELINE, POPULATION_REFERENCE) or not depends_on_user(rows):
            continue
        preferred, groups = c.done_summary.preferred_toxicity, c.done_summary.sensitivity_of
        for group in (*SENSITIVITIES, ALL_USERS):
            pair = paired_comparison([a for a in rows if group == ALL_USERS or groups.get(a.user_id) == group],
                                     population, preferred, c.done_summary.tolerated_toxicity)
            if pair is None:
                continue
            out.append(HeadToHeadRow(
                c.method, c.alpha, c.settings, reference.alpha, group, n=pair.n, users=pair.users,
                tox_dist=pair.tox_dist, population_tox_dist=pair.reference_tox_dist,
                tox_dist_diff=pair.tox_dist - pair.reference_tox_dist, tox_dist_diff_ci=pair.tox_dist_ci,
                toxicity=pair.toxicity, population_toxicity=pair.reference_toxicity,
                toxicity_diff=pair.toxicity - pair.reference_toxicity, toxicity_diff_ci=pair.toxicity_ci,
                violation_share=pair.violations, population_violation_share=pair.reference_violations,
                violation_diff=pair.violations - pair.reference_violations, violation_diff_ci=pair.violations_ci))
    return out


def ppa_rows(result: PPAResult) -> list[PPARow]:
    """Each predictor's accuracy with a user-clustered interval and, but for the population predictor, its
    paired difference from it on the pairs both predict; the fair coin last, at its expectation."""
    pair_users = np.asarray(result.pair_users)
    population = next((p for p in result.predictors if p.name == result.population), None)
    reference = dict(zip(population.pairs, population.correct)) if population else {}
    rows = []
    for p in result.predictors:
        correct, users = np.asarray(p.correct, dtype=np.float64), pair_users[p.pairs]
        shared = [k for k, i in enumerate(p.pairs) if i in reference]  # every pair: population predicts all
        diff: float | None = None
        diff_ci: Interval | None = None
        if p is not population and len(shared) >= 2:
            theirs = np.array([reference[p.pairs[k]] for k in shared])
            diff = float(correct[shared].mean() - theirs.mean())
            diff_ci = user_bootstrap(correct[shared], list(users[shared]), baseline=theirs)
        rows.append(PPARow(p.name, len(p.pairs), len(set(users)), float(correct.mean()) if correct.size else NAN,
                           user_bootstrap(correct, list(users)) if correct.size >= 2 else None, diff, diff_ci))
    rows.append(PPARow(result.chance, len(pair_users), len(set(pair_users)), 0.5, None))
    return rows
