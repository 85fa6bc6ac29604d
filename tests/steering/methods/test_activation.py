import pytest
import torch

from steer_away import internals
from steer_away.chat import encode, render_chat
from steer_away.generation import GenerationConfig, generate, next_token_scores
from steer_away.steering.framework.interventions import ablate, add, add_keep_norm, intervention_named
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.vectors.vector import SteeringVector

PROMPTS = ["the quick brown fox", "what is the capital of France?", "thank you"]
CFG = GenerationConfig(max_new_tokens=10)


def random_vector(seed, layers=(1, 2), scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({l: torch.randn(32, generator=g) * scale for l in layers},
                          model_id="tiny-random-llama", hidden_size=32, num_layers=4)


def tokens(outs):
    return [o.token_ids for o in outs]


def test_alpha_zero_is_exactly_unsteered(tiny_lm):
    method = ActivationSteering(random_vector(0), alpha=0.0)
    assert tokens(generate(tiny_lm, PROMPTS, method=method, config=CFG)) == tokens(generate(tiny_lm, PROMPTS, config=CFG))
    torch.testing.assert_close(next_token_scores(tiny_lm, PROMPTS, method), next_token_scores(tiny_lm, PROMPTS),
                               rtol=0, atol=0)


def test_steering_changes_output_and_scope_undoes_itself(tiny_lm):
    layers = internals.decoder_layers(tiny_lm.model)
    hooks_before = [len(layer._forward_hooks) for layer in layers]
    plain = tokens(generate(tiny_lm, PROMPTS, config=CFG))
    steered = tokens(generate(tiny_lm, PROMPTS, method=ActivationSteering(random_vector(1), alpha=2.0), config=CFG))
    assert steered != plain
    assert tokens(generate(tiny_lm, PROMPTS, config=CFG)) == plain
    assert [len(layer._forward_hooks) for layer in layers] == hooks_before


def test_hooks_removed_after_an_exception_inside_the_scope(tiny_lm):
    layers = internals.decoder_layers(tiny_lm.model)
    before = [dict(layer._forward_hooks) for layer in layers]  # transformers may keep its own capture hooks
    plain = next_token_scores(tiny_lm, PROMPTS)
    prepared = ActivationSteering(random_vector(1), alpha=2.0, gate="prefill").prepare(
        tiny_lm, [[{"role": "user", "content": p}] for p in PROMPTS], [RowSteering()] * 3)
    with pytest.raises(KeyError), prepared.scope(tiny_lm.model):
        raise KeyError("inside")
    torch.testing.assert_close(next_token_scores(tiny_lm, PROMPTS), plain, rtol=0, atol=0)
    assert [dict(layer._forward_hooks) for layer in layers] == before


def test_prefill_gate_equals_steered_prefill_then_plain_decoding(tiny_lm):
    vec, alpha, steps = random_vector(2), 2.0, 6
    gated = generate(tiny_lm, PROMPTS[:1], method=ActivationSteering(vec, alpha, gate="prefill"),
                     config=GenerationConfig(max_new_tokens=steps))[0].token_ids
    # by hand: steered prefill into the KV cache, then unsteered one-token steps
    text = render_chat(tiny_lm.tokenizer, [{"role": "user", "content": PROMPTS[0]}])
    ids, mask = encode(tiny_lm, [text])
    cache = internals.new_kv_cache(tiny_lm.model)
    edits = {l: (lambda d: (lambda h: h.add_(d)))(alpha * v) for l, v in vec.directions.items()}
    with torch.inference_mode():
        with internals.residual_hooks(tiny_lm.model, edits):
            logits = internals.forward_step(tiny_lm.model, ids, mask, cache)
        expected = []
        for _ in range(steps):
            tok = int(logits.argmax(-1))
            if tok == tiny_lm.tokenizer.eos_token_id:
                break
            expected.append(tok)
            mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=-1)
            logits = internals.forward_step(tiny_lm.model, torch.tensor([[tok]]), mask, cache)
    assert gated == expected
    fully = generate(tiny_lm, PROMPTS[:1], method=ActivationSteering(vec, alpha),
                     config=GenerationConfig(max_new_tokens=steps))[0].token_ids
    assert fully[:1] == gated[:1]  # the first token comes from the (steered) prefill in both


def test_gate_one_token_is_prefill_only(tiny_lm):
    vec = random_vector(3)
    a = generate(tiny_lm, PROMPTS, method=ActivationSteering(vec, 2.0, gate="prefill"), config=CFG)
    b = generate(tiny_lm, PROMPTS, method=ActivationSteering(vec, 2.0, gate=1), config=CFG)
    assert tokens(a) == tokens(b)
    with pytest.raises(ValueError, match="gate"):
        ActivationSteering(vec, 1.0, gate=0)


def test_mixed_user_batch_equals_each_row_alone(tiny_lm):
    vectors = {"ann": random_vector(10), "bob": random_vector(11), "cy": random_vector(12, layers=(2, 3))}
    method = ActivationSteering(vectors, alpha=1.5, default=random_vector(13))
    rows = [RowSteering("ann"), RowSteering("bob", alpha=-1.0), RowSteering("cy"), RowSteering("stranger")]
    prompts = [*PROMPTS, "please be polite"]
    together = tokens(generate(tiny_lm, prompts, method=method, rows=rows, config=CFG))
    alone = [generate(tiny_lm, [p], method=method, rows=[r], config=CFG)[0].token_ids for p, r in zip(prompts, rows)]
    assert together == alone
    # the steering is real: the same prompt steered for ann and for bob gives different answers
    as_bob = generate(tiny_lm, [prompts[0]], method=method, rows=[RowSteering("bob", alpha=-1.0)], config=CFG)
    assert as_bob[0].token_ids != together[0]


def test_norm_preserving_keeps_hidden_norm(tiny_lm):
    vec = random_vector(4, layers=(1,))
    prepared = ActivationSteering(vec, 5.0, intervention=add_keep_norm).prepare(
        tiny_lm, [[{"role": "user", "content": "hi"}]], [RowSteering()])
    ids, _ = encode(tiny_lm, [render_chat(tiny_lm.tokenizer, [{"role": "user", "content": "hi"}])])
    with torch.inference_mode():
        with internals.record_residuals(tiny_lm.model, [1]) as before:
            tiny_lm.model(ids)
        with prepared.scope(tiny_lm.model), internals.record_residuals(tiny_lm.model, [1]) as after:
            tiny_lm.model(ids)
    torch.testing.assert_close(after[1].norm(dim=-1), before[1].norm(dim=-1), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(after[1], before[1])


def test_ablation_removes_the_component_along_the_vector(tiny_lm):
    vec = random_vector(5, layers=(1,))
    rows = [RowSteering(alpha=1.0), RowSteering(alpha=0.0)]  # the α=0 row takes no part
    conversations = [[{"role": "user", "content": "hi"}]] * 2
    prepared = ActivationSteering(vec, 1.0, intervention=ablate).prepare(tiny_lm, conversations, rows)
    ids, _ = encode(tiny_lm, [render_chat(tiny_lm.tokenizer, c) for c in conversations])
    with torch.inference_mode():
        with internals.record_residuals(tiny_lm.model, [1]) as before:
            tiny_lm.model(ids)
        with prepared.scope(tiny_lm.model), internals.record_residuals(tiny_lm.model, [1]) as after:
            tiny_lm.model(ids)
    unit = vec.directions[1] / vec.directions[1].norm()
    assert float((before[1][0] @ unit).abs().max()) > 1e-2  # there was a component to remove
    torch.testing.assert_close(after[1][0] @ unit, torch.zeros(ids.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(after[1][1], before[1][1])


def test_interventions_by_name():
    assert intervention_named("add") is add and intervention_named("add-keep-norm") is add_keep_norm
    with pytest.raises(ValueError, match="unknown intervention 'rotate'"):
        intervention_named("rotate")


def test_vector_for_wrong_model_is_rejected(tiny_lm):
    bad = SteeringVector({1: torch.ones(16)}, model_id="x", hidden_size=16, num_layers=4)
    with pytest.raises(ValueError, match="hidden size 16"):
        generate(tiny_lm, PROMPTS[:1], method=ActivationSteering(bad, 1.0), config=CFG)
