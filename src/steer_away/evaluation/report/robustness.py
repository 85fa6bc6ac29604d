"""Does an effect rest on one prompt? Each cell's Δ% with its most influential prompt left out, and how
the unsteered answers' TOXICITY spreads over the prompts.

With few prompts, one whose unsteered answer the scorer rates toxic (rightly or not) can carry a whole
cell's change; these figures say when that happens instead of leaving it to a reader's luck.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from steer_away.evaluation.metrics.functions import (
    cluster_bootstrap,
    excludes_zero,
    leave_one_prompt_out,
    most_influential_prompt,
    pct_change,
    toxicity_shares,
)
from steer_away.evaluation.report.rows import PromptConcentration
from steer_away.evaluation.store import AnswerRecord
from steer_away.evaluation.summary import Interval

TOXIC_PROMPT = 0.1  # a prompt whose mean unsteered TOXICITY exceeds this draws toxic answers
# what a table needs to carry a general claim (issue 23): no prompt over this share of the TOXICITY mass,
# and at least this many prompts with unsteered TOXICITY over TOXIC_PROMPT
MAX_PROMPT_SHARE = 0.10
MIN_TOXIC_PROMPTS = 20


@dataclass(frozen=True)
class OnePromptRobustness:
    """A cell's Δ% of TOXICITY distance with its most influential prompt left out."""

    pct: float
    ci: Interval | None  # user- and prompt-clustered, on the rows left
    prompt_id: str
    prompt: str
    fragile: bool  # leaving the prompt out flips Δ%'s sign or whether its interval excludes 0


NOT_MEASURED = OnePromptRobustness(float("nan"), None, "", "", False)


def one_prompt_robustness(rows: Sequence[AnswerRecord], base_rows: Sequence[AnswerRecord],
                          preferred: Mapping[str, float], full_ci: Interval | None) -> OnePromptRobustness:
    """Leave out the prompt whose removal moves the cell's Δ% (paired with unsteered on row id) furthest
    toward zero or across it; `full_ci` is the interval of Δ% on every row, to compare significance with.
    Not measured (NaN) with fewer than two prompts or no preferred TOXICITY."""
    base = {a.row_id: a for a in base_rows}
    paired = [a for a in rows if a.row_id in base and a.user_id in preferred]
    if not paired:
        return NOT_MEASURED
    distance = np.array([abs(a.toxicity[0] - preferred[a.user_id]) for a in paired])
    base_distance = np.array([abs(base[a.row_id].toxicity[0] - preferred[a.user_id]) for a in paired])
    prompts = [a.prompt_id for a in paired]
    full = pct_change(float(distance.mean()), float(base_distance.mean()))
    without = leave_one_prompt_out(distance, base_distance, prompts)
    top = most_influential_prompt(full, without)
    if top is None:
        return NOT_MEASURED
    keep = np.asarray(prompts) != top
    kept = [a for a, k in zip(paired, keep) if k]
    ci = cluster_bootstrap(distance[keep], [a.user_id for a in kept], [a.prompt_id for a in kept],
                           baseline=base_distance[keep], relative=True) if len(kept) >= 2 else None
    pct = without[top]
    fragile = bool(np.sign(pct) != np.sign(full)) or excludes_zero(full_ci) != excludes_zero(ci)
    return OnePromptRobustness(pct, ci, top, next(a.prompt for a in paired if a.prompt_id == top), fragile)


def prompt_concentration(base_rows: Sequence[AnswerRecord]) -> PromptConcentration | None:
    """Each prompt's share of the unsteered answers' TOXICITY mass, the largest, and how many prompts draw
    toxic answers; None without unsteered answers."""
    if not base_rows:
        return None
    toxicity = np.array([a.toxicity[0] for a in base_rows])
    prompts = [a.prompt_id for a in base_rows]
    shares = toxicity_shares(toxicity, prompts)
    top = max(shares, key=lambda p: shares[p] if math.isfinite(shares[p]) else -math.inf)
    prompt_of = np.asarray(prompts)
    toxic = sum(1 for p in shares if toxicity[prompt_of == p].mean() > TOXIC_PROMPT)
    return PromptConcentration(prompts=len(shares), top_prompt_id=top,
                               top_prompt=next(a.prompt for a in base_rows if a.prompt_id == top),
                               top_share=shares[top], toxic_prompts=toxic, threshold=TOXIC_PROMPT, shares=shares)
