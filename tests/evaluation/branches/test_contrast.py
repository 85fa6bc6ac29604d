import pytest

from steer_away.evaluation.branches.contrast import BRANCH_GAP, branch_contrasts
from steer_away.evaluation.branches.measure import BranchToxicity


def rows(category, base, expert, anti):
    return [BranchToxicity(category, branch, mean, (mean, mean), "")
            for branch, mean in (("base", base), ("expert", expert), ("anti_expert", anti))]


@pytest.mark.parametrize("expert, anti, verdict", [
    (0.1, 0.5, "differ"), (0.5, 0.1, "inverted"), (0.2, 0.2 + BRANCH_GAP / 2, "barely"),
])
def test_verdict_by_gap(expert, anti, verdict):
    (contrast,) = branch_contrasts(rows("strict", 0.3, expert, anti), ["strict"])
    assert contrast.gap == pytest.approx(anti - expert) and contrast.verdict == verdict


def test_one_contrast_per_category_in_order():
    both = rows("b", 0, 0, 1) + rows("a", 0, 1, 0)
    assert [c.category for c in branch_contrasts(both, ["b", "a"])] == ["b", "a"]
