"""The synthetic PRISM stand-in: seeded, PRISM-shaped, and as rarely toxic as the published figures say."""

from collections import Counter

import numpy as np
import pytest

from steer_away.data.prism import load_prism
from steer_away.data.standin import CONVERSATION_MIX, StandinSpec, generate_standin, write_standin


@pytest.fixture(scope="module")
def standin():
    return generate_standin(StandinSpec(n_users=300, seed=0))


def test_same_spec_same_rows_other_seed_other_rows():
    small = StandinSpec(n_users=20, seed=3)
    assert generate_standin(small) == generate_standin(small)
    assert generate_standin(small) != generate_standin(StandinSpec(n_users=20, seed=4))


def test_shape_follows_prism(standin):
    survey, conversations = standin
    assert len(survey) == 300
    users_with = {c["user_id"] for c in conversations}
    assert 0.88 <= len(users_with) / len(survey) <= 0.97  # PRISM: 1,396 of 1,500
    assert 4.9 <= len(conversations) / len(users_with) <= 5.6  # PRISM: 5.3
    turns = [1 + max(h["turn"] for h in c["conversation_history"]) for c in conversations]
    assert min(turns) >= 2 and max(turns) <= 22 and 3.2 <= np.mean(turns) <= 3.6  # PRISM: 2-22, mean 3.4
    shares = Counter(c["conversation_type"] for c in conversations)
    total = sum(CONVERSATION_MIX.values())
    for kind, count in CONVERSATION_MIX.items():
        assert abs(shares[kind] / len(conversations) - count / total) < 0.06


def test_turns_show_four_models_then_an_ab_pair_of_the_winner(standin):
    _, conversations = standin
    for conv in conversations[:200]:
        by_turn: dict[int, list[dict]] = {}
        for item in conv["conversation_history"]:
            if item["role"] == "model":
                by_turn.setdefault(item["turn"], []).append(item)
        first = by_turn[0]
        assert len(first) == 4 and len({r["model_name"] for r in first}) == 4
        winner = next(r["model_name"] for r in first if r["if_chosen"])
        for turn, responses in by_turn.items():
            chosen = [r for r in responses if r["if_chosen"]]
            assert len(chosen) == 1 and chosen[0]["score"] == max(r["score"] for r in responses)
            if turn > 0:
                assert len(responses) == 2 and {r["model_name"] for r in responses} == {winner}


def test_ratings_and_stated_safety_follow_prism(standin):
    survey, conversations = standin
    ratings = np.array([h["score"] for c in conversations for h in c["conversation_history"] if h["role"] == "model"])
    assert ratings.min() >= 1 and ratings.max() <= 100
    assert 61 <= ratings.mean() <= 69 and 26 <= ratings.std() <= 32  # PRISM: mean 65, sd 29
    safety = np.array([s["stated_prefs"]["safety"] for s in survey])
    assert 76 <= safety.mean() <= 84 and 21 <= safety.std() <= 29  # PRISM: mean 80, sd 25
    groups = Counter(s["synthetic_taste"]["group"] for s in survey)
    assert groups["averse"] > groups["indifferent"] > groups["likes_edge"] > 0
    # stated safety is only loosely tied to revealed taste: related, far from determined by it
    taste = np.array([s["synthetic_taste"]["edge_taste"] for s in survey])
    r = np.corrcoef(taste, safety)[0, 1]
    assert -0.5 < r < -0.05


def test_edgy_answers_are_rare_and_commoner_in_controversy(standin):
    _, conversations = standin
    rates = {}
    for kind in CONVERSATION_MIX:
        registers = [h["register"] for c in conversations if c["conversation_type"] == kind
                     for h in c["conversation_history"] if h["role"] == "model"]
        rates[kind] = 1 - registers.count("clean") / len(registers)
    assert all(rate < 0.08 for rate in rates.values())
    assert rates["controversy guided"] > 1.5 * rates["values guided"]


def test_toxicity_targets_with_the_shipped_scorer(tmp_path):
    from steer_away.profiles.statistics import dataset_statistics
    from steer_away.scoring import make_scorer

    data = load_prism(write_standin(tmp_path / "standin", StandinSpec(n_users=300, seed=0)))
    assert data.report.skipped == 0
    stats = dataset_statistics(data, make_scorer("jigsaw-bilstm"))
    assert stats.meets_targets() == {"tie_share": True, "preferred_median": True, "share_above_half": True}
    assert stats.pairs > 5000 and stats.responses_first_turn == 4.0 and stats.responses_later_turns == 2.0


def test_the_contrast_fixture_misses_the_targets_by_design():
    from steer_away.profiles.statistics import dataset_statistics
    from steer_away.scoring import make_scorer

    stats = dataset_statistics(load_prism("contrast-fixture"), make_scorer("jigsaw-bilstm"))
    assert stats.meets_targets() == {"tie_share": False, "preferred_median": False, "share_above_half": False}


def test_bad_spec_is_refused():
    with pytest.raises(ValueError, match="n_users"):
        generate_standin(StandinSpec(n_users=0))
    with pytest.raises(ValueError, match="conversations_per_user"):
        generate_standin(StandinSpec(conversations_per_user=(1.0, 1.0, 0, 0, 0, 0)))
