"""Preference pairs built from PRISM's rated turns, how a sample of them spreads over users, and
the split into training and held-out prompts (vectors are extracted from one side, evaluated on the other).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass

from steer_away.data.categories import CategoryRule
from steer_away.data.prism import RatedTurn, chosen_response
from steer_away.errors import InputError


@dataclass(frozen=True)
class PreferencePair:
    user_id: str
    conversation_id: str
    turn: int
    conversation_type: str
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    opening: str = ""  # the conversation's first user message ("" in files written before it was kept)

    @property
    def margin(self) -> float:
        return self.chosen_score - self.rejected_score

    @property
    def pair_id(self) -> str:
        digest = hashlib.sha1(f"{self.chosen}\0{self.rejected}".encode()).hexdigest()[:8]
        return f"{self.conversation_id}/{self.turn}/{digest}"


def preference_pairs(
    turns: Iterable[RatedTurn],
    *,
    min_margin: float = 0.0,
    max_turn: int | None = None,
    users: set[str] | None = None,
) -> list[PreferencePair]:
    """Chosen vs each lower-rated response of every turn, keeping pairs whose margin >= `min_margin`."""
    pairs = []
    for turn in turns:
        if max_turn is not None and turn.turn > max_turn:
            continue
        if users is not None and turn.user_id not in users:
            continue
        best = chosen_response(turn.responses)
        for other in turn.responses:
            if other is best or other.score >= best.score:
                continue
            if best.score - other.score < min_margin:
                continue
            pairs.append(PreferencePair(user_id=turn.user_id, conversation_id=turn.conversation_id,
                                        turn=turn.turn, conversation_type=turn.conversation_type,
                                        prompt=turn.prompt, chosen=best.text, rejected=other.text,
                                        chosen_score=best.score, rejected_score=other.score,
                                        opening=turn.opening))
    return pairs


@dataclass(frozen=True)
class PairCoverage:
    """How a pair sample spreads over users: what `vectors extract` and a sweep print."""

    n_pairs: int
    n_users: int
    users_in_pool: int
    per_user: dict[str, int]
    focus: dict[str, int]  # the users the evaluation steers -> their pairs in the sample

    def summary(self) -> str:
        counts = sorted(self.per_user.values())
        text = (f"{self.n_pairs} pairs from {self.n_users} of {self.users_in_pool} users "
                f"(per user: min {counts[0] if counts else 0}, median {counts[len(counts) // 2] if counts else 0}, "
                f"max {counts[-1] if counts else 0})")
        if self.focus:
            values = sorted(self.focus.values())
            text += (f"; the {len(values)} steered users have {values[0]}–{values[-1]} training pairs each"
                     + (f" ({sum(v == 0 for v in values)} have none)" if values[0] == 0 else ""))
        return text


def sample_pairs(pairs: list[PreferencePair], n: int | None, seed: int = 0, *,
                 focus_users: Iterable[str] = (), focus_pairs: int = 24) -> list[PreferencePair]:
    """A deterministic sample of about `n` pairs, stratified by user.

    Users the evaluation steers (`focus_users`) first get up to `focus_pairs` of their own pairs each;
    the rest of the budget fills every user up evenly (water-filling: each user's pairs in random
    order, users raised one pair at a time), so that no user with pairs is crowded out by prolific
    ones. All pairs when `n` is None or at least the pool.
    """
    if n is None or n >= len(pairs):
        return list(pairs)
    rng = random.Random(seed)
    by_user: dict[str, list[PreferencePair]] = {}
    for pair in pairs:
        by_user.setdefault(pair.user_id, []).append(pair)
    for user in sorted(by_user):
        rng.shuffle(by_user[user])
    taken: dict[str, int] = {u: 0 for u in by_user}
    budget = n
    for user in sorted(set(focus_users) & set(by_user)):
        take = min(focus_pairs, len(by_user[user]), budget)
        taken[user] = take
        budget -= take
    order = sorted(by_user)
    rng.shuffle(order)
    level = 0
    while budget > 0 and level < max(len(v) for v in by_user.values()):
        level += 1  # water-filling: raise every user to `level` pairs, in random order, while budget lasts
        for user in order:
            if budget == 0:
                break
            if taken[user] < level and taken[user] < len(by_user[user]):
                taken[user] += 1
                budget -= 1
    picked = {id(p) for u in by_user for p in by_user[u][: taken[u]]}
    return [p for p in pairs if id(p) in picked]


def pair_coverage(sample: list[PreferencePair], pool: list[PreferencePair],
                  focus_users: Iterable[str] = ()) -> PairCoverage:
    per_user: dict[str, int] = {}
    for pair in sample:
        per_user[pair.user_id] = per_user.get(pair.user_id, 0) + 1
    return PairCoverage(n_pairs=len(sample), n_users=len(per_user),
                        users_in_pool=len({p.user_id for p in pool}), per_user=per_user,
                        focus={u: per_user.get(u, 0) for u in focus_users})


def _opening_stratum(pair: PreferencePair) -> str:
    return CategoryRule().categorise(pair.opening or pair.prompt, pair.conversation_type)


def split_pairs(pairs: list[PreferencePair], holdout: float = 0.3, seed: int = 0, *, by: str = "prompt"
                ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Split into (train, held-out) so that no group sits in both.

    by="prompt" (default) holds out whole opening prompts, a share `holdout` of them in each prompt
    category, so held-out pairs come from prompts the vectors never saw; by="conversation" holds out
    that share of each user's conversations (the user is seen in both halves, the prompt may be too).
    """
    if by not in ("prompt", "conversation"):
        raise InputError(f"split by must be 'prompt' or 'conversation', got {by!r}")
    rng = random.Random(seed)
    if by == "prompt":
        strata: dict[str, set[str]] = {}
        for pair in pairs:
            opening = pair.opening or pair.prompt
            strata.setdefault(_opening_stratum(pair), set()).add(opening)
        first_stratum: dict[str, str] = {}
        for stratum in sorted(strata):
            for opening in strata[stratum]:
                first_stratum.setdefault(opening, stratum)
        held_openings: set[str] = set()
        for stratum in sorted(strata):
            openings = sorted(o for o in strata[stratum] if first_stratum[o] == stratum)
            rng.shuffle(openings)
            held_openings.update(openings[: round(len(openings) * holdout)])
        test = [p for p in pairs if (p.opening or p.prompt) in held_openings]
        train = [p for p in pairs if (p.opening or p.prompt) not in held_openings]
        return train, test
    conversations = sorted({(p.user_id, p.conversation_id) for p in pairs})
    rng.shuffle(conversations)
    by_user: dict[str, list[str]] = {}
    for user, conv in conversations:
        by_user.setdefault(user, []).append(conv)
    held = {(u, c) for u, convs in by_user.items() for c in convs[: round(len(convs) * holdout)]}
    train = [p for p in pairs if (p.user_id, p.conversation_id) not in held]
    test = [p for p in pairs if (p.user_id, p.conversation_id) in held]
    return train, test
