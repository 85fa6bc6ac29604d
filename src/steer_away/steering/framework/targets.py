"""The TOXICITY each user prefers, as methods that steer toward a number read it (rerank, guided).

A known user's target is their profile's preferred score on its first attribute (TOXICITY for every
backend we ship); anyone else gets the population target, the mean of every profile's. Without
profiles the target is 0: those methods then simply detoxify.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from steer_away.errors import InputError
from steer_away.scoring.base import ScorerError, ToxicityScorer
from steer_away.scoring.registry import check_scorer_name

if TYPE_CHECKING:
    from steer_away.profiles import UserProfile


class ToxicityTargets:
    """Each user's preferred score on the scorer's first attribute; the population's for the rest."""

    def __init__(self, profiles: Mapping[str, UserProfile], scorer: ToxicityScorer, method: str,
                 scored_by: str | None = None) -> None:
        """`scored_by`: the scorer the profiles record; another judge would compare scores on another scale."""
        if scored_by is not None and profiles and scored_by != scorer.backend:
            raise InputError(f"{method}: the profiles were scored by {scored_by} but the judge is {scorer.backend}: "
                             f"their preferred TOXICITY is on another scale (name the profiles' scorer as judge)")
        self.by_user = {user: float(p.primary()) for user, p in profiles.items()}
        for user, profile in profiles.items():
            if profile.attributes and profile.attributes[0] != scorer.attributes[0]:
                raise InputError(f"{method}: profile of {user} prefers a {profile.attributes[0]} score but the scorer "
                                 f"{scorer.backend} reports {scorer.attributes[0]} first; build profiles with it")
        values = list(self.by_user.values())
        self.population = sum(values) / len(values) if values else 0.0

    @property
    def personal(self) -> bool:
        return bool(self.by_user)

    def of(self, user_id: str | None) -> float:
        return self.by_user.get(user_id, self.population) if user_id is not None else self.population


def check_judge(name: str) -> None:
    """A method's `judge` argument: "" (the run's scorer) or a scorer name, refused before any run needs it."""
    if name:
        try:
            check_scorer_name(name)
        except ScorerError as err:
            raise InputError(f"judge: {err}") from None
