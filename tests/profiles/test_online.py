"""Profiles learned one choice at a time: replaying every choice from empty equals a batch build over
the same choices (synthetic choices and a scorer whose answers are known by construction)."""

import dataclasses
import random

import numpy as np
import pytest

from steer_away.data.prism import LoadReport, PrismData
from steer_away.errors import InputError
from steer_away.profiles import SensitivityRule, build_profiles
from steer_away.profiles.online import MIN_PAIRS, Choice, OnlineProfiles, choice_turn, population_cutoffs
from tests.steering.fake_scorer import CharShareScorer, profile

WORDS = ["sure", "here", "you", "go", "idiot", "aaa", "ooo", "fine", "thanks", "whatever", "ugh"]


def random_choices(seed: int, users: int = 5, per_user: int = 14) -> list[Choice]:
    """Choices of simulated users, some picking the more vowel-heavy ('toxic' to CharShareScorer) answer
    more often than others, with 1-3 rejected answers and a rating on some."""
    rng = random.Random(seed)
    out = []
    for u in range(users):
        leaning = u / max(users - 1, 1)
        for i in range(per_user):
            answers = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(rng.randint(2, 4))]
            scores = [sum(c in "aeiou" for c in a) / len(a) for a in answers]
            order = sorted(range(len(answers)), key=lambda k: scores[k], reverse=rng.random() < leaning)
            chosen = answers[order[0]]
            rejected = tuple(a for k, a in enumerate(answers) if k != order[0])
            rating = float(rng.randint(1, 100)) if rng.random() < 0.5 else None
            out.append(Choice(f"e{u}-{i}", f"sim{u}", f"prompt {i}", chosen, rejected, rating))
    rng.shuffle(out)  # users' choices arrive interleaved
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replaying_choices_one_at_a_time_equals_a_batch_build_over_them(seed):
    scorer = CharShareScorer()
    choices = random_choices(seed)
    cutoffs = (0.3, 0.4)
    online = OnlineProfiles(scorer.attributes, cutoffs)
    for choice in choices:
        scores = scorer.score([choice.chosen, *choice.rejected])
        online.apply(choice, scores[0], list(scores[1:]))
    batch = build_profiles(PrismData({}, [choice_turn(c) for c in choices], LoadReport()), scorer,
                           rule=SensitivityRule(*cutoffs, absolute=True))
    replayed = {user: online.profile(user) for user in online.evidence}
    assert set(replayed) == set(batch)
    for user, built in batch.items():
        got = dataclasses.asdict(replayed[user])
        want = dataclasses.asdict(built)
        got["extra"].pop("source")
        assert got == want  # every field, bit for bit
    # the users differ (the test is not comparing constants)
    assert len({p.sensitivity for p in batch.values()}) >= 2
    assert len({round(p.primary(), 6) for p in batch.values()}) == len(batch)


def test_a_rating_weights_the_chosen_answer_as_a_prism_score_does():
    scorer = CharShareScorer()
    online = OnlineProfiles(scorer.attributes, (0.3, 0.4))
    a, b = np.array([0.2]), np.array([0.6])
    online.apply(Choice("1", "u", "p", "x", ("y",), rating=100), a, [np.array([0.9])])
    profile = online.apply(Choice("2", "u", "p", "x", ("y",), rating=50), b, [np.array([0.9])])
    assert profile.preferred_toxicity[0] == pytest.approx((0.2 * 1.0 + 0.6 * 0.5) / 1.5)
    assert profile.dislike == pytest.approx(-((0.2 - 0.9) + (0.6 - 0.9)) / 2)
    assert profile.n_pairs == 2 and profile.n_turns == 2 and profile.sensitivity == "moderate"


def test_cold_start_until_enough_pairs_and_reset():
    online = OnlineProfiles(["TOXICITY"], (0.3, 0.4))
    for i in range(MIN_PAIRS):
        assert not online.ready("u")
        online.apply(Choice(str(i), "u", "p", "x", ("y",)), np.array([0.1]), [np.array([0.5])])
    assert online.ready("u") and set(online.steering_profiles()) == {"u"}
    online.reset("u")
    assert not online.ready("u") and online.steering_profiles() == {} and online.pairs("u") == 0


def test_the_population_cutoffs_come_from_the_profiles_file():
    recorded = profile("a", 0.1)
    recorded.extra["sensitivity_cutoffs"] = [0.05, 0.2]
    assert population_cutoffs({"a": recorded}) == (0.05, 0.2)
    people = {u: profile(u, v) for u, v in [("a", 0.1), ("b", 0.2), ("c", 0.3), ("d", 0.4)]}
    low, high = population_cutoffs(people)
    assert 0.1 < low < high < 0.4
    with pytest.raises(InputError, match="needs the population's profiles"):
        population_cutoffs({})
