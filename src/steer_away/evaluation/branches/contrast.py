"""What `categories check` concludes from each category's branch toxicities: whether the anti-expert
branch is clearly more toxic than the expert (the contrast logit steering relies on)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from steer_away.evaluation.branches.measure import BranchToxicity

BRANCH_GAP = 0.1  # mean TOXICITY difference below which the two branches barely differ

Verdict = Literal["differ", "inverted", "barely"]


@dataclass(frozen=True)
class BranchContrast:
    category: str
    gap: float  # anti-expert − expert mean TOXICITY

    @property
    def verdict(self) -> Verdict:
        """differ: anti-expert clearly edgier; inverted: the expert clearly edgier; barely: neither."""
        if self.gap > BRANCH_GAP:
            return "differ"
        if self.gap < -BRANCH_GAP:
            return "inverted"
        return "barely"


def branch_contrasts(rows: Sequence[BranchToxicity], categories: Iterable[str]) -> list[BranchContrast]:
    """One contrast per category, in the order given."""
    mean = {(r.category, r.branch): r.mean for r in rows}
    return [BranchContrast(name, mean[(name, "anti_expert")] - mean[(name, "expert")]) for name in categories]
