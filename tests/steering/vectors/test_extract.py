import pytest
import torch

from steer_away.chat import render_chat
from steer_away.steering.vectors.compose import population_vector
from steer_away.steering.vectors.extract import extract_pair_activations
from tests.conftest import make_tiny_lm
from tests.steering.helpers import make_pairs

LAYERS = [1, 2]


def reference_last_token(lm, text, layer):
    """Hidden state after decoder layer `layer` at the last token, one unpadded row at a time."""
    ids = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = lm.model(ids, output_hidden_states=True)
    return out.hidden_states[layer + 1][0, -1].float()


def test_difference_of_means_by_hand(tiny_lm):
    pairs = make_pairs(5)
    acts = extract_pair_activations(tiny_lm, pairs, LAYERS, batch_size=3, progress=False)
    vec = population_vector(acts, ("tiny", 32, 4))
    for layer in LAYERS:
        diffs = []
        for p in pairs:
            prompt = render_chat(tiny_lm.tokenizer, [{"role": "user", "content": p.prompt}])
            diffs.append(reference_last_token(tiny_lm, prompt + p.chosen, layer)
                         - reference_last_token(tiny_lm, prompt + p.rejected, layer))
        torch.testing.assert_close(vec.directions[layer], torch.stack(diffs).mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position", ["last", "mean"])
def test_padded_batch_equals_one_by_one(tokenizer, position):
    # float64 weights: what is left is the masking/position logic, not float32 matmul noise
    lm = make_tiny_lm("llama", tokenizer)
    lm.model.double()
    pairs = make_pairs(6)
    batched = extract_pair_activations(lm, pairs, LAYERS, position=position, batch_size=6, progress=False)
    single = extract_pair_activations(lm, pairs, LAYERS, position=position, batch_size=1, progress=False)
    torch.testing.assert_close(batched.diffs, single.diffs, atol=1e-5, rtol=1e-5)


def test_padded_batch_population_vector_float32(tiny_lm):
    pairs = make_pairs(6)
    batched = extract_pair_activations(tiny_lm, pairs, LAYERS, batch_size=6, progress=False).diffs.mean(0)
    single = extract_pair_activations(tiny_lm, pairs, LAYERS, batch_size=1, progress=False).diffs.mean(0)
    assert (batched - single).abs().max() / single.abs().max() < 1e-5


def test_mean_position_averages_only_response_tokens(tiny_lm):
    pair = make_pairs(1)[0]
    acts = extract_pair_activations(tiny_lm, [pair], [1], position="mean", batch_size=1, progress=False)
    tok = tiny_lm.tokenizer
    prompt = render_chat(tok, [{"role": "user", "content": pair.prompt}])
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])

    def mean_response(text):
        ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            hidden = tiny_lm.model(ids, output_hidden_states=True).hidden_states[2][0]
        return hidden[n_prompt:].mean(0)

    expected = mean_response(prompt + pair.chosen) - mean_response(prompt + pair.rejected)
    torch.testing.assert_close(acts.diffs[0, 0], expected, atol=1e-5, rtol=1e-5)


def test_bad_position_and_empty_pairs(tiny_lm):
    with pytest.raises(ValueError, match="position"):
        extract_pair_activations(tiny_lm, make_pairs(2), LAYERS, position="first", progress=False)
    with pytest.raises(ValueError, match="no preference pairs"):
        extract_pair_activations(tiny_lm, [], LAYERS, progress=False)


def ab_pairs(n: int = 6) -> list:
    """The CAA paper's format: an A/B question, the answers are the option letters."""
    from steer_away.data.pairs import PreferencePair

    topics = ["the weather", "a rude reply", "your opinion", "the capital of France", "a kind answer", "the fox"]
    pairs = []
    for i in range(n):
        good, bad = ("A", "B") if i % 2 == 0 else ("B", "A")
        prompt = f"How should I answer about {topics[i % 6]}?\n(A) politely\n(B) with an insult"
        pairs.append(PreferencePair(user_id="u", conversation_id=f"ab{i}", turn=0, conversation_type="unguided",
                                    prompt=prompt, chosen=f"({good}", rejected=f"({bad}", chosen_score=90,
                                    rejected_score=10))
    return pairs


def test_extraction_matches_the_original_caa_recipe(tiny_lm):
    """Ours (padded batches, hooks, read at the last response token) against the reference
    (wrapped blocks, one sequence at a time, read at the answer letter of "(A)", index -2)."""
    from tests.steering.reference_caa import caa_vector

    pairs = ab_pairs(6)
    ours = population_vector(extract_pair_activations(tiny_lm, pairs, LAYERS, batch_size=4, progress=False),
                             ("tiny", 32, 4))
    prompts = [render_chat(tiny_lm.tokenizer, [{"role": "user", "content": p.prompt}]) for p in pairs]
    reference = caa_vector(tiny_lm.model, tiny_lm.tokenizer, [t + p.chosen + ")" for t, p in zip(prompts, pairs)],
                           [t + p.rejected + ")" for t, p in zip(prompts, pairs)], LAYERS, token_index=-2)
    # the letter token really sits at index -2 of "(A)" for this tokenizer, as in the paper's code
    ids = tiny_lm.tokenizer(prompts[0] + "(A)", add_special_tokens=False)["input_ids"]
    assert tiny_lm.tokenizer.decode(ids[-2:-1]).strip() == "A"
    for layer in LAYERS:
        assert float(reference[layer].norm()) > 1e-3
        torch.testing.assert_close(ours.directions[layer], reference[layer], atol=1e-5, rtol=1e-4)
