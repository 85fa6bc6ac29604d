import math

import pytest
import torch

from steer_away import internals
from steer_away.chat import encode, render_chat
from steer_away.generation import GenerationConfig, generate
from steer_away.profiles.build import UserProfile
from steer_away.steering.framework.categories import CategoryConfigError, SteeringCategory, load_categories
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.logits import ACD, EADS, CategoryOverride, parse_category_map, with_context

PROMPTS = ["the quick brown fox", "what is the capital of France?", "thank you"]
CFG = GenerationConfig(max_new_tokens=10)
CATS = {
    "strict": SteeringCategory("strict", "please be polite and careful", "shut up idiot", alpha=2.0, beta=0.1),
    "moderate": SteeringCategory("moderate", "be helpful", "stupid opinion", alpha=1.0, beta=0.2),
    "tolerant": SteeringCategory("tolerant", "the lazy dog", "kind and careful", alpha=0.5, beta=0.05),
}


def profile(user, sensitivity):
    return UserProfile(user, ["TOXICITY"], [0.1], [0.2], 0.1, None, sensitivity, [0.0], 1, 1)


PROFILES = {"s": profile("s", "strict"), "t": profile("t", "tolerant")}
KINDS = {"eads": EADS, "acd": ACD}


def tokens(outs):
    return [o.token_ids for o in outs]


@pytest.mark.parametrize("kind", ["eads", "acd"])
def test_alpha_zero_reproduces_unsteered_greedy(tiny_lm, kind):
    method = KINDS[kind](CATS, PROFILES, alpha=0.0)
    rows = [RowSteering("s"), RowSteering("t"), RowSteering(None)]
    assert tokens(generate(tiny_lm, PROMPTS, method=method, rows=rows, config=CFG)) == \
        tokens(generate(tiny_lm, PROMPTS, config=CFG))


def test_steering_changes_greedy_output(tiny_lm):
    method = EADS(CATS, PROFILES, alpha=3.0)
    assert tokens(generate(tiny_lm, PROMPTS, method=method, config=CFG)) != tokens(generate(tiny_lm, PROMPTS, config=CFG))


def test_batched_branches_equal_separate_forward_passes(tiny_lm):
    method = EADS(CATS, PROFILES)
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    rows = [RowSteering("s"), RowSteering("t"), RowSteering(None)]
    prepared = method.prepare(tiny_lm, convs, rows)
    texts = [render_chat(tiny_lm.tokenizer, c) for branch in prepared.branches for c in branch]
    ids, mask = encode(tiny_lm, texts)
    with torch.inference_mode():
        batched = internals.forward_step(tiny_lm.model, ids, mask, internals.new_kv_cache(tiny_lm.model))
        for row, text in enumerate(texts):
            one = tiny_lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            alone = tiny_lm.model(one).logits[0, -1]
            torch.testing.assert_close(batched[row], alone, atol=1e-4, rtol=1e-4)
    # and the combination is the documented formula
    logp = torch.log_softmax(batched.view(3, 3, -1), dim=-1)
    alphas = torch.tensor([2.0, 0.5, 1.0])[:, None]
    expected = logp[0] + alphas * (logp[1] - logp[2])
    torch.testing.assert_close(prepared.combine(batched.view(3, 3, -1)), expected)


def test_branch_prompts_follow_each_users_category(tiny_lm):
    method = EADS(CATS, PROFILES)
    prepared = method.prepare(tiny_lm, [[{"role": "user", "content": "hi"}]] * 3,
                              [RowSteering("s"), RowSteering("t"), RowSteering("unknown")])
    base, expert, anti = prepared.branches
    assert [c[0]["content"] for c in expert] == ["please be polite and careful", "the lazy dog", "be helpful"]
    assert [c[0]["content"] for c in anti] == ["shut up idiot", "kind and careful", "stupid opinion"]
    assert base[0] == [{"role": "user", "content": "hi"}]
    assert ACD(CATS, PROFILES).prepare(tiny_lm, base, [RowSteering("s")] * 3).num_branches == 2


@pytest.mark.parametrize("sample", [False, True])
def test_acd_never_emits_a_token_the_base_finds_implausible(tiny_lm, monkeypatch, sample):
    from steer_away.steering.methods import logits as module

    seen: dict[int, list[torch.Tensor]] = {}  # per request (its prepared batch), the base's log-probs per step
    original = module._ContrastiveBatch.combine

    def spy(self, logits):
        seen.setdefault(id(self), []).append(torch.log_softmax(logits[0].float(), -1))
        return original(self, logits)

    monkeypatch.setattr(module._ContrastiveBatch, "combine", spy)
    method = ACD(CATS, PROFILES, alpha=5.0)
    cfg = GenerationConfig(max_new_tokens=12, do_sample=sample, temperature=2.0, seed=1)
    outs = generate(tiny_lm, PROMPTS, method=method, rows=[RowSteering("s")] * 3, config=cfg)
    checked = 0
    assert len(seen) == len(PROMPTS)
    for out, steps in zip(outs, seen.values()):  # requests are first combined in prompt order
        for step, tok in enumerate(out.token_ids):
            base = steps[step][0]
            assert base[tok] >= base.max() + math.log(0.1) - 1e-6
            checked += 1
    assert checked > 10


def test_unknown_sensitivity_and_bad_alpha(tiny_lm):
    method = EADS(CATS, {"x": profile("x", "extreme")})
    with pytest.raises(CategoryConfigError, match="sensitivity 'extreme'"):
        method.prepare(tiny_lm, [[{"role": "user", "content": "hi"}]], [RowSteering("x")])
    with pytest.raises(ValueError, match="finite"):
        EADS(CATS, alpha=float("inf"))
    with pytest.raises(ValueError, match="finite"):
        EADS(CATS).prepare(tiny_lm, [[{"role": "user", "content": "hi"}]],
                                            [RowSteering(None, alpha=float("nan"))])


def test_shipped_categories_load():
    cats = load_categories()
    assert set(cats) >= {"strict", "moderate", "tolerant"}
    assert all(math.isfinite(c.alpha) and 0 < c.beta <= 1 for c in cats.values())


@pytest.mark.parametrize("text, message", [
    ('[strict]\nexpert="a"\nanti_expert="b"\nalpha=1\n[moderate]\nexpert="a"\nanti_expert="b"\nalpha=1\n',
     "missing category 'tolerant'"),
    ('[strict]\nexpert="a"\nanti_expert="b"\nalpha=nan\n', r"\[strict\].alpha must be a finite number"),
    ('[strict]\nexpert=""\nanti_expert="b"\nalpha=1\n', r"\[strict\].expert must be a non-empty string"),
    ('[strict]\nexpert="a"\nanti_expert="b"\nalpha=1\nbeta=2\n', r"beta must be in \(0, 1\]"),
    ("[strict\n", "not valid TOML"),
    ('[strict]\nexpert="a"\nanti_expert="b"\nalpha=1e300\n', r"\[strict\].alpha must be at most 1000"),
    ('[strict]\nexpert="a"\nanti_expert="b"\nalhpa=1\n', r"\[strict\].alhpa is not a category key; did you mean 'alpha'"),
])
def test_bad_category_files(tmp_path, text, message):
    path = tmp_path / "cats.toml"
    path.write_text(text)
    required = ("strict",) if "missing" not in message else ("strict", "moderate", "tolerant")
    with pytest.raises(CategoryConfigError, match=message):
        load_categories(path, required=required)


def test_system_prompt_merge():
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    merged = with_context(conv, "be kind")
    assert merged[0]["content"] == "be kind\n\nbe brief" and len(merged) == 2


def test_examples_sit_between_the_system_prompt_and_the_conversation_of_the_branches_only(tmp_path):
    cats = load_categories()
    strict = cats["strict"]
    assert strict.anti_expert_examples and strict.expert_examples  # the shipped file gives both branches shots
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    branches = EADS(cats).prepare(None, [conv], [RowSteering(overrides=CategoryOverride("strict"))]).branches
    base, expert, anti = (b[0] for b in branches)
    assert base == conv  # no example leaks into the base branch
    shots = 2 * len(strict.anti_expert_examples)
    assert anti[0] == {"role": "system", "content": f"{strict.anti_expert}\n\nbe brief"}
    assert [m["content"] for m in anti[1:1 + shots:2]] == [u for u, _ in strict.anti_expert_examples]
    assert [m["content"] for m in anti[2:2 + shots:2]] == [a for _, a in strict.anti_expert_examples]
    assert anti[1 + shots:] == conv[1:] and expert[1 + 2 * len(strict.expert_examples):] == conv[1:]


def test_shipped_categories_follow_the_study_and_keep_the_inversion_as_an_option():
    cats = load_categories()
    for name in ("strict", "moderate", "tolerant"):
        assert "toxic" in cats[name].anti_expert and "insult" in cats[name].expert  # careful vs toxic
        assert cats[name].anti_expert_examples == cats["strict"].anti_expert_examples
    assert cats["strict"].alpha > cats["moderate"].alpha > cats["tolerant"].alpha  # strict steered hardest
    assert "cautious" in cats["tolerant-inverted"].anti_expert


def test_category_map_redirects_a_sensitivity(tmp_path):
    from types import SimpleNamespace

    profiles = {"t": SimpleNamespace(sensitivity="tolerant")}
    plain = EADS(load_categories(), profiles)
    mapped = EADS(load_categories(), profiles, category_map=parse_category_map("tolerant=tolerant-inverted"))
    assert plain.category_for("t").name == "tolerant" and mapped.category_for("t").name == "tolerant-inverted"
    with pytest.raises(CategoryConfigError, match="not among"):
        EADS(load_categories(), profiles, category_map={"tolerant": "nope"})
    with pytest.raises(ValueError, match="sensitivity=category"):
        parse_category_map("tolerant")


@pytest.mark.parametrize("text, message", [
    ('[example_sets]\nx = [{ user = "a" }]\n[strict]\nexpert="e"\nanti_expert="a"\nalpha=1\n', "exactly the keys"),
    ('[strict]\nexpert="e"\nanti_expert="a"\nalpha=1\nanti_expert_examples = "missing"\n', "must name a list"),
    ('[example_sets]\nx = []\n[strict]\nexpert="e"\nanti_expert="a"\nalpha=1\n', "non-empty list"),
])
def test_bad_example_sets(tmp_path, text, message):
    path = tmp_path / "cats.toml"
    path.write_text(text)
    with pytest.raises(CategoryConfigError, match=message):
        load_categories(path, required=("strict",))


class _Unshared(EADS):
    """EADS with prefix sharing turned off: every branch row fed whole."""

    def prepare(self, lm, conversations, rows):
        prepared = super().prepare(lm, conversations, rows)
        prepared.prefixes = None
        return prepared


def test_shared_prefix_keys_and_values_change_nothing(tiny_lm):
    from steer_away.generation import candidate_scores, encode_prepared

    shots = (("the quick brown fox", "thank you for the kind answer"), ("what is the capital of France?", "Paris"))
    cats = {name: SteeringCategory(name, f"be {name} and polite", "shut up idiot", alpha=1.5, beta=0.1,
                                   expert_examples=shots, anti_expert_examples=shots[::-1])
            for name in ("strict", "moderate", "tolerant")}
    rows = [RowSteering(overrides=CategoryOverride(c)) for c in ("strict", "moderate", "strict")]
    prompts = ["thank you", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
               "the quick brown fox jumps over the lazy dog and then"]
    from steer_away.chat import as_conversation, render_chat

    prepared = EADS(cats).prepare(tiny_lm, [as_conversation("thank you")], rows[:1])
    texts = [render_chat(tiny_lm.tokenizer, branch[0]) for branch in prepared.branches]
    ids, mask, _ = encode_prepared(tiny_lm, prepared, texts)
    assert ids.shape[1] < mask.shape[1]  # the branch rows fed only their own tokens
    cfg = GenerationConfig(max_new_tokens=12, stop_on_eos=False)
    shared = generate(tiny_lm, prompts, method=EADS(cats), rows=rows, config=cfg)
    whole = generate(tiny_lm, prompts, method=_Unshared(cats), rows=rows, config=cfg)
    assert [g.token_ids for g in shared] == [g.token_ids for g in whole]
    letters = [5, 6, 7, 8]
    a, _ = candidate_scores(tiny_lm, prompts, letters, EADS(cats), rows)
    b, _ = candidate_scores(tiny_lm, prompts, letters, _Unshared(cats), rows)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
