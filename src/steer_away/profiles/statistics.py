"""The figures that say whether PRISM-shaped data looks like PRISM: `steer-away data stats`.

Shape (users, conversations, turns, responses per turn, ratings) comes from the records; the
toxicity figures need a scorer: the share of preference pairs whose TOXICITY differs by at most
`tie_width` (the CAA study found 96.6 % ties on PRISM) and the spread of each user's preferred
TOXICITY (the score-weighted mean TOXICITY of the answers they chose, as in their profile).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from steer_away.data.pairs import preference_pairs
from steer_away.data.prism import PrismData
from steer_away.profiles.build import build_profiles, pair_toxicity_diffs
from steer_away.scoring.base import ToxicityScorer

TIE_WIDTH = 0.05
# What the published PRISM figures and the targets say (checked by tests on the stand-in).
TARGETS = {"tie_share": (">=", 0.90), "preferred_median": ("<=", 0.10), "share_above_half": ("<", 0.05)}


@dataclass(frozen=True)
class DatasetStats:
    users: int
    users_with_conversations: int
    conversations: int
    conversation_types: dict[str, int]
    turns_mean: float
    turns_min: int
    turns_max: int
    responses_first_turn: float
    responses_later_turns: float
    rated_responses: int
    rating_mean: float
    rating_sd: float
    stated_safety_mean: float
    stated_safety_sd: float
    pairs: int
    tie_share: float
    preferred_median: float
    preferred_p90: float
    share_above_half: float
    scorer: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def meets_targets(self) -> dict[str, bool]:
        checks = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
        return {name: checks[op](getattr(self, name), bound) for name, (op, bound) in TARGETS.items()}

    def rows(self) -> list[tuple[str, str, str]]:
        """(figure, value, PRISM's published figure or our target) for a table."""
        types = ", ".join(f"{n} {t}" for t, n in sorted(self.conversation_types.items()))
        return [
            ("users (with conversations)", f"{self.users} ({self.users_with_conversations})", "1,500 (1,396)"),
            ("conversations", f"{self.conversations} ({self.conversations / max(self.users_with_conversations, 1):.1f}"
             " per user)", "8,011 (5.3 per user)"),
            ("conversation types", types, "3,113 unguided, 2,460 values, 2,438 controversy"),
            ("turns per conversation", f"mean {self.turns_mean:.2f}, {self.turns_min}–{self.turns_max}",
             "mean 3.4, 2–22"),
            ("responses per turn", f"first {self.responses_first_turn:.2f}, later {self.responses_later_turns:.2f}",
             "first 4, later 2"),
            ("rated responses", f"{self.rated_responses}", "68,371"),
            ("rating mean / sd", f"{self.rating_mean:.1f} / {self.rating_sd:.1f}", "65 / 29"),
            ("stated safety mean / sd", f"{self.stated_safety_mean:.1f} / {self.stated_safety_sd:.1f}", "80 / 25"),
            ("preference pairs", f"{self.pairs}", ""),
            (f"pairs with |ΔTOXICITY| ≤ {TIE_WIDTH}", f"{self.tie_share:.1%}", "≥ 90 % (CAA study: 96.6 %)"),
            ("preferred TOXICITY median / p90", f"{self.preferred_median:.3f} / {self.preferred_p90:.3f}",
             "median ≤ 0.10"),
            ("users with preferred TOXICITY > 0.5", f"{self.share_above_half:.1%}", "< 5 %"),
        ]


def dataset_statistics(data: PrismData, scorer: ToxicityScorer) -> DatasetStats:
    conversations: dict[str, list[int]] = {}
    types: dict[str, str] = {}
    first: list[int] = []
    later: list[int] = []
    ratings: list[float] = []
    for turn in data.turns:
        conversations.setdefault(turn.conversation_id, []).append(turn.turn)
        types[turn.conversation_id] = turn.conversation_type
        (first if turn.turn == 0 else later).append(len(turn.responses))
        ratings += [r.score for r in turn.responses]
    turns = [max(t) + 1 for t in conversations.values()] or [0]
    pairs = preference_pairs(data.turns)
    diffs = pair_toxicity_diffs(pairs, scorer)
    ties = float(np.mean(np.abs(diffs[:, 0]) <= TIE_WIDTH)) if len(pairs) else float("nan")
    profiles = build_profiles(data, scorer)
    preferred = np.array([p.primary() for p in profiles.values()]) if profiles else np.array([np.nan])
    safety = np.array([s.stated_safety for s in data.survey.values() if s.stated_safety is not None] or [np.nan])
    rating = np.asarray(ratings or [np.nan], dtype=float)
    return DatasetStats(
        users=len(data.survey), users_with_conversations=len({t.user_id for t in data.turns}),
        conversations=len(conversations), conversation_types=dict(Counter(types.values())),
        turns_mean=float(np.mean(turns)), turns_min=int(min(turns)), turns_max=int(max(turns)),
        responses_first_turn=float(np.mean(first)) if first else 0.0,
        responses_later_turns=float(np.mean(later)) if later else 0.0,
        rated_responses=len(ratings), rating_mean=float(rating.mean()), rating_sd=float(rating.std()),
        stated_safety_mean=float(safety.mean()), stated_safety_sd=float(safety.std()),
        pairs=len(pairs), tie_share=ties, preferred_median=float(np.median(preferred)),
        preferred_p90=float(np.quantile(preferred, 0.9)), share_above_half=float(np.mean(preferred > 0.5)),
        scorer=scorer.backend)
