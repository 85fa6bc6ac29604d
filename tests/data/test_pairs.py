from steer_away.data.pairs import PreferencePair, pair_coverage, preference_pairs, sample_pairs, split_pairs
from steer_away.data.prism import load_prism


def test_sampling_and_split_are_deterministic():
    pairs = preference_pairs(load_prism("contrast-fixture").turns)
    assert sample_pairs(pairs, 50, seed=1) == sample_pairs(pairs, 50, seed=1)
    assert sample_pairs(pairs, 50, seed=1) != sample_pairs(pairs, 50, seed=2)
    for by in ("conversation", "prompt"):
        train, test = split_pairs(pairs, holdout=0.3, seed=0, by=by)
        assert len(train) + len(test) == len(pairs) and test
        assert not {(p.user_id, p.conversation_id) for p in train} & {(p.user_id, p.conversation_id) for p in test}


def test_split_by_prompt_holds_out_whole_opening_prompts_in_every_category():
    from steer_away.data.categories import CategoryRule

    pairs = preference_pairs(load_prism().turns)
    train, test = split_pairs(pairs, holdout=0.3, seed=0)
    assert {p.opening for p in train}.isdisjoint({p.opening for p in test})
    rule = CategoryRule()
    held_categories = {rule.categorise(p.opening, p.conversation_type) for p in test if p.turn == 0}
    assert held_categories == {"benign_control", "context_dependent", "harmful_borderline", "safe_sensitive"}
    assert all(p.opening for p in pairs)  # later turns know the prompt their conversation opened with


def make_user_pairs(counts):
    pairs = []
    for user, n in counts.items():
        for i in range(n):
            pairs.append(PreferencePair(user_id=user, conversation_id=f"{user}-c{i}", turn=0,
                                        conversation_type="unguided", prompt=f"q{i}", chosen=f"a{i}",
                                        rejected=f"b{i}", chosen_score=80, rejected_score=20))
    return pairs


def test_stratified_sampling_reaches_every_user_and_serves_focus_users_first():
    pool = make_user_pairs({"prolific": 500, "a": 3, "b": 3, "c": 30, "focus": 40})
    sample = sample_pairs(pool, 40, seed=0, focus_users=["focus"], focus_pairs=16)
    coverage = pair_coverage(sample, pool, ["focus"])
    assert len(sample) == 40
    assert coverage.focus == {"focus": 16}
    assert coverage.per_user["a"] == 3 and coverage.per_user["b"] == 3  # small users are not crowded out
    assert coverage.per_user["prolific"] == coverage.per_user["c"] == 9  # the rest shared evenly
    assert "the 1 steered users have 16–16 training pairs" in coverage.summary()
    uniform = random_sample = sample_pairs(pool, 40, seed=0)
    assert all(pair_coverage(uniform, pool).per_user.get(u, 0) >= 3 for u in ("a", "b"))
    assert random_sample == sample_pairs(pool, 40, seed=0)
