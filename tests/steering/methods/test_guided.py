"""Classifier-guided decoding: the re-weighting against a plain reference, and what it does to answers."""

import numpy as np
import pytest
import torch

from steer_away.chat import plain_text
from steer_away.errors import InputError
from steer_away.generation import GenerationConfig, generate, token_continuation_scores
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.framework.targets import ToxicityTargets
from steer_away.steering.methods.guided import ClassifierGuided, GuidedArgs
from tests.steering.fake_scorer import CharShareScorer, profile

PROFILES = {"low": profile("low", 0.0), "high": profile("high", 0.6)}
CONFIG = GenerationConfig(max_new_tokens=8, stop_on_eos=False)


def reference(logp, answers, decode, score, targets, alpha, k, window=0):
    """The documented rule, one row and one token at a time."""
    out = np.empty_like(logp)
    for i, row in enumerate(logp):
        top = np.argsort(-row, kind="stable")[:k]
        kept = answers[i][-window:] if window else answers[i]
        penalty = {int(t): alpha * abs(score(decode([*kept, int(t)])) - targets[i]) for t in top}
        worst = max(penalty.values())
        out[i] = row - worst
        for t, p in penalty.items():
            out[i, t] = row[t] - p
    return out


@pytest.mark.parametrize("window", [0, 2])
def test_rescore_matches_the_reference(tiny_lm, window):
    scorer = CharShareScorer()
    method = ClassifierGuided(scorer, ToxicityTargets(PROFILES, scorer, "guided"), alpha=3.0, top_k=5, window=window)
    rows = [RowSteering("low"), RowSteering("high"), RowSteering("nobody")]
    batch = method.prepare(tiny_lm, [[{"role": "user", "content": "x"}]] * 3, rows)
    scores = torch.randn(3, tiny_lm.tokenizer.vocab_size, generator=torch.Generator().manual_seed(0))
    answers = [[5, 9, 12], [], [7, 7, 7, 7]]
    got = batch.rescore(scores, answers).numpy()
    logp = torch.log_softmax(scores, -1).numpy()
    decode = lambda ids: tiny_lm.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    score = lambda text: float(scorer.score([text])[0, 0])  # noqa: E731
    want = reference(logp, answers, decode, score, [0.0, 0.6, 0.3], 3.0, 5, window)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.isfinite(got).all()  # no token is ruled out


def test_strength_zero_is_the_unsteered_model_and_a_strong_pull_moves_toward_each_target(tiny_lm):
    scorer = CharShareScorer()
    targets = ToxicityTargets(PROFILES, scorer, "guided")
    prompts = ["the quick brown fox", "what is the capital of France?"]
    base = [g.token_ids for g in generate(tiny_lm, prompts, config=CONFIG)]
    off = ClassifierGuided(scorer, targets, alpha=0.0)
    assert [g.token_ids for g in generate(tiny_lm, prompts, method=off, rows=[RowSteering("low")] * 2,
                                          config=CONFIG)] == base
    strong = ClassifierGuided(scorer, targets, alpha=1000.0, top_k=50)
    for user, target in (("low", 0.0), ("high", 0.6)):
        texts = [g.text for g in generate(tiny_lm, prompts, method=strong, rows=[RowSteering(user)] * 2, config=CONFIG)]
        base_texts = [tiny_lm.tokenizer.decode(ids, skip_special_tokens=True) for ids in base]
        assert np.mean([abs(s - target) for s in scorer.score(texts)[:, 0]]) < \
            np.mean([abs(s - target) for s in scorer.score(base_texts)[:, 0]]), user


def test_a_row_answers_the_same_alone_and_beside_others(tiny_lm):
    scorer = CharShareScorer()
    method = ClassifierGuided(scorer, ToxicityTargets(PROFILES, scorer, "guided"), alpha=50.0)
    prompts = ["the quick brown fox", "thank you", "what is the capital of France?"]
    rows = [RowSteering("low"), RowSteering("high"), RowSteering("nobody")]
    together = generate(tiny_lm, prompts, method=method, rows=rows, config=CONFIG)
    for prompt, row, got in zip(prompts, rows, together):
        assert generate(tiny_lm, [prompt], method=method, rows=[row], config=CONFIG)[0].token_ids == got.token_ids


def test_scoring_a_continuation_applies_the_rule_decoding_applies(tiny_lm):
    """Each token of the guided greedy answer is the top choice of the guided scores at its position
    (the answer so far is the tokens before it), and not every one is the unsteered model's."""
    scorer = CharShareScorer()
    method = ClassifierGuided(scorer, ToxicityTargets(PROFILES, scorer, "guided"), alpha=1000.0, top_k=50)
    context = tiny_lm.tokenizer("the quick brown fox", add_special_tokens=False)["input_ids"]
    answer = generate(tiny_lm, [plain_text("the quick brown fox")], method=method, rows=[RowSteering("high")],
                      config=CONFIG)[0]
    assert answer.prompt_tokens == len(context)
    (steered,), = token_continuation_scores(tiny_lm, [context], [[answer.token_ids]], method, [RowSteering("high")])
    (plain,), = token_continuation_scores(tiny_lm, [context], [[answer.token_ids]])
    assert steered.greedy and not plain.greedy
    assert steered.loglik > plain.loglik  # the rule concentrates its mass on the tokens it picks


def test_targets_and_arguments_are_checked():
    scorer = CharShareScorer()
    targets = ToxicityTargets(PROFILES, scorer, "guided")
    assert targets.of("low") == 0.0 and targets.of(None) == targets.of("nobody") == pytest.approx(0.3)
    assert ToxicityTargets({}, scorer, "guided").of("anyone") == 0.0  # without profiles: detoxify
    other = profile("x", 0.1)
    other.attributes[0] = "INSULT"
    with pytest.raises(InputError, match="prefers a INSULT score but the scorer char-share reports TOXICITY"):
        ToxicityTargets({"x": other}, scorer, "guided")
    with pytest.raises(InputError, match="top_k must be between 1 and 256"):
        GuidedArgs(top_k=0)
    with pytest.raises(InputError, match="top_k must be between 1 and 256"):
        GuidedArgs(top_k=50_000)
    with pytest.raises(InputError, match="alpha must be at least 0"):  # it would reward distance from the target
        GuidedArgs(alpha=-1.0)
    with pytest.raises(InputError, match="alpha must be at least 0"):
        ClassifierGuided(scorer, targets).prepare(None, [[{"role": "user", "content": "x"}]], [RowSteering(alpha=-2.0)])
    with pytest.raises(InputError, match="judge: unknown scorer 'perspectiv'"):
        GuidedArgs(judge="perspectiv")
    with pytest.raises(InputError, match="the profiles were scored by detoxify but the judge is char-share"):
        ToxicityTargets(PROFILES, scorer, "guided", scored_by="detoxify")
    with pytest.raises(InputError, match="window must be >= 0"):
        GuidedArgs(window=-1)
    with pytest.raises(InputError, match="alpha must be finite"):
        GuidedArgs(alpha=float("inf"))


def test_the_judge_defaults_to_the_scorer_the_profiles_were_scored_by(tiny_lm, tmp_path, monkeypatch):
    from steer_away.profiles import save_profiles
    from steer_away.steering.framework import resources as resources_module
    from steer_away.steering.framework.resources import SteeringResources

    path = tmp_path / "profiles.json"
    save_profiles(PROFILES, path, "detoxify")
    built = []
    monkeypatch.setattr(resources_module, "make_scorer", lambda name: built.append(name) or CharShareScorer())
    resources = SteeringResources(tiny_lm, profiles=path)
    resources.scorer()
    assert built == ["detoxify"]  # not the default backend: the targets are on detoxify's scale
    SteeringResources(tiny_lm).scorer()
    assert built[-1] == "jigsaw-bilstm"  # no profiles file: the default
