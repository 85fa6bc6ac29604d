"""Profiles that follow a user's choices in a live chat, one choice at a time.

A choice is what PRISM records: the answers a user was shown, the one they picked and, optionally,
how they rated it. Each is turned into a rated turn and fed to the same `ProfileEvidence` a batch
build uses, so replaying every choice from empty gives exactly the profile `build_profiles` gives
over the same turns (with the same sensitivity cut-offs). The cut-offs stay the population's (those
the served profiles file was built with): one user's choices move their own sensitivity, not
everyone's thresholds.

Cold start: a user is steered by the population (or by their profile from the file) until they have
made `MIN_PAIRS` choices; then by their own profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from steer_away.data.prism import RatedResponse, RatedTurn
from steer_away.errors import InputError
from steer_away.profiles.build import ProfileEvidence, SensitivityRule, UserProfile

# Why 10: the per-user CAA vector mixes a user's own pairs with the population's by n / (n + 10)
# (vectors/compose.py, shrinkage 10), so at 10 pairs their own evidence first counts as much as the
# population's; and the mean TOXICITY of fewer chosen answers moves by more than the gap between
# two sensitivity cut-offs on our stand-in (one chosen answer of TOXICITY 0.3 among 5 moves it 0.06).
MIN_PAIRS = 10
UNRATED = 100.0  # a choice without a rating counts as a full-strength pick


@dataclass(frozen=True)
class Choice:
    """One feedback event: `user` picked `chosen` over every answer in `rejected`."""

    event_id: str
    user_id: str
    prompt: str
    chosen: str
    rejected: tuple[str, ...]
    rating: float | None = None  # 1-100, of the chosen answer

    @property
    def weight(self) -> float:
        return (self.rating if self.rating is not None else UNRATED) / 100.0


def choice_turn(choice: Choice) -> RatedTurn:
    """The rated turn a batch build reads for this choice (the rejected answers rated below the chosen one)."""
    rating = choice.rating if choice.rating is not None else UNRATED
    responses = (RatedResponse(choice.chosen, "served", rating, True, 0),
                 *(RatedResponse(text, "served", 0.0, False, i + 1) for i, text in enumerate(choice.rejected)))
    return RatedTurn(f"feedback:{choice.event_id}", choice.user_id, "feedback", 0, (), choice.prompt, responses)


def population_cutoffs(profiles: Mapping[str, UserProfile], rule: SensitivityRule | None = None) -> tuple[float, float]:
    """The sensitivity cut-offs a profiles file was built with (recorded in it), else computed from it."""
    for profile in profiles.values():
        recorded = profile.extra.get("sensitivity_cutoffs")
        if isinstance(recorded, list) and len(recorded) == 2:
            return float(recorded[0]), float(recorded[1])
    if not profiles:
        raise InputError("learning from feedback needs the population's profiles (--profiles): a user's sensitivity "
                         "is where their preferred TOXICITY falls among everyone's")
    return (rule or SensitivityRule()).cutoffs([p.primary() for p in profiles.values()])


class OnlineProfiles:
    """Every user's evidence from their choices; `apply` adds one and returns their new profile."""

    def __init__(self, attributes: Sequence[str], cutoffs: tuple[float, float], *, min_pairs: int = MIN_PAIRS,
                 bt_l2: float = 1.0) -> None:
        self.attributes = list(attributes)
        self.cutoffs = cutoffs
        self.min_pairs = min_pairs
        self.bt_l2 = bt_l2
        self.evidence: dict[str, ProfileEvidence] = {}

    def apply(self, choice: Choice, chosen_scores: np.ndarray, rejected_scores: Sequence[np.ndarray]) -> UserProfile:
        evidence = self.evidence.setdefault(choice.user_id, ProfileEvidence(len(self.attributes)))
        evidence.add_turn(np.asarray(chosen_scores), choice.weight, [np.asarray(r) for r in rejected_scores])
        return self.profile(choice.user_id)

    def profile(self, user_id: str) -> UserProfile:
        evidence = self.evidence[user_id]
        profile = evidence.profile(user_id, list(self.attributes), None, bt_l2=self.bt_l2)
        profile.sensitivity = SensitivityRule.classify(profile.primary(), self.cutoffs)
        profile.extra["sensitivity_cutoffs"] = list(self.cutoffs)
        profile.extra["source"] = "feedback"
        return profile

    def ready(self, user_id: str) -> bool:
        """Enough choices to steer the user by their own profile rather than the population's."""
        evidence = self.evidence.get(user_id)
        return evidence is not None and evidence.n_pairs >= self.min_pairs

    def pairs(self, user_id: str) -> int:
        evidence = self.evidence.get(user_id)
        return evidence.n_pairs if evidence is not None else 0

    def reset(self, user_id: str) -> None:
        self.evidence.pop(user_id, None)

    def steering_profiles(self) -> dict[str, UserProfile]:
        """The profiles that replace the file's: users past the cold-start threshold."""
        return {user: self.profile(user) for user in self.evidence if self.ready(user)}
