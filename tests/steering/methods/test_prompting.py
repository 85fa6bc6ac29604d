"""Profile prompting: the user's category's system prompt and example exchanges before their conversation."""

import pytest

from steer_away.generation import GenerationConfig, generate
from steer_away.steering.framework.by_category import CategoryOverride
from steer_away.steering.framework.categories import CategoryConfigError, SteeringCategory, load_categories
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.prompting import ProfilePrompt, PromptArgs
from tests.steering.fake_scorer import profile

CATS = {
    "strict": SteeringCategory("strict", "e", "a", 1.0, prompt="be very gentle", prompt_examples=(("hi", "hello, friend"),)),
    "moderate": SteeringCategory("moderate", "e", "a", 1.0, prompt="be polite"),
    "tolerant": SteeringCategory("tolerant", "e", "a", 1.0, prompt="plain talk is fine"),
}
PROFILES = {"s": profile("s", 0.01, "strict"), "t": profile("t", 0.3, "tolerant")}
CONV = [{"role": "user", "content": "the quick brown fox"}]


def test_each_user_gets_their_categorys_prompt_and_examples_unknown_users_the_default():
    method = ProfilePrompt(CATS, PROFILES, examples=True)
    batch = method.prepare(None, [CONV] * 3, [RowSteering("s"), RowSteering("t"), RowSteering("nobody")])
    (strict, tolerant, unknown), = batch.branches
    assert strict == [{"role": "system", "content": "be very gentle"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello, friend"}, *CONV]
    assert tolerant == [{"role": "system", "content": "plain talk is fine"}, *CONV]
    assert unknown == [{"role": "system", "content": "be polite"}, *CONV]
    # the shared prefix is everything before the user's own turn (encoded once per category)
    assert batch.prefixes == [[strict[:3], tolerant[:1], unknown[:1]]]
    without = ProfilePrompt(CATS, PROFILES).prepare(None, [CONV], [RowSteering("s")])  # examples are off by default
    assert without.branches == [[[{"role": "system", "content": "be very gentle"}, *CONV]]]


def test_a_user_system_message_is_kept_after_the_tolerance_prompt_and_overrides_pick_a_category():
    own = [{"role": "system", "content": "you are a pirate"}, *CONV]
    (row,), = ProfilePrompt(CATS, PROFILES).prepare(None, [own], [RowSteering("t")]).branches
    assert row[0] == {"role": "system", "content": "plain talk is fine\n\nyou are a pirate"} and row[1:] == CONV
    (row,), = ProfilePrompt(CATS).prepare(None, [CONV], [RowSteering(overrides=CategoryOverride("tolerant"))]).branches
    assert row[0]["content"] == "plain talk is fine"


def test_rows_of_one_category_share_an_answer_whoever_they_are_for():
    method = ProfilePrompt(CATS, {**PROFILES, "s2": profile("s2", 0.02, "strict")})
    assert method.answer_group(RowSteering("s")) == method.answer_group(RowSteering("s2"))
    assert method.answer_group(RowSteering("s")) != method.answer_group(RowSteering("t"))


def test_a_category_without_a_prompt_is_refused_by_name():
    cats = {**CATS, "tolerant": SteeringCategory("tolerant", "e", "a", 1.0)}
    with pytest.raises(CategoryConfigError, match="category 'tolerant' has no 'prompt'"):
        ProfilePrompt(cats, PROFILES)
    ProfilePrompt(cats, {"s": PROFILES["s"]})  # nobody needs it: fine


def test_the_shipped_category_file_has_a_prompt_for_every_category(tmp_path):
    shipped = load_categories()
    assert all(c.prompt and c.prompt_examples for c in shipped.values())
    assert PromptArgs().examples is False
    bad = tmp_path / "c.toml"
    bad.write_text("\n".join(f'[{n}]\nexpert = "e"\nanti_expert = "a"\nalpha = 1.0\nprompt = "  "'
                             for n in ("strict", "moderate", "tolerant")))
    with pytest.raises(CategoryConfigError, match=r"\[strict\]\.prompt must be a non-empty string"):
        load_categories(bad)


def test_the_prompt_changes_the_answer_and_sharing_the_prefix_changes_nothing(tiny_lm):
    config = GenerationConfig(max_new_tokens=6, stop_on_eos=False)
    method = ProfilePrompt(CATS, PROFILES, examples=True)
    steered = generate(tiny_lm, [CONV, CONV], method=method, rows=[RowSteering("s"), RowSteering("t")], config=config)
    plain = [generate(tiny_lm, [method.context(CONV, CATS[c])], config=config)[0] for c in ("strict", "tolerant")]
    assert [g.token_ids for g in steered] == [g.token_ids for g in plain]
    assert steered[0].prompt_tokens > steered[1].prompt_tokens  # the example exchange is in the context
