import pytest
import torch

from steer_away.chat import render_chat
from steer_away.generation import GenerationConfig, generate, next_token_scores, stop_token_ids
from tests.conftest import make_tiny_lm

PROMPTS = ["the quick brown fox", "what is the capital of France?", "thank you",
           "please be respectful and careful with everyone you meet today"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_greedy_equals_one_by_one(arch, tokenizer):
    lm = make_tiny_lm(arch, tokenizer)
    cfg = GenerationConfig(max_new_tokens=12)
    batched = generate(lm, PROMPTS, config=cfg)
    for prompt, out in zip(PROMPTS, batched):
        alone = generate(lm, [prompt], config=cfg)[0]
        assert out.token_ids == alone.token_ids
        assert out.text == alone.text


def test_greedy_matches_transformers_generate(tiny_lm):
    prompt = PROMPTS[1]
    text = render_chat(tiny_lm.tokenizer, [{"role": "user", "content": prompt}])
    ids = tiny_lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    ref = tiny_lm.model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None,
                                 pad_token_id=tiny_lm.tokenizer.pad_token_id)
    ref_ids = ref[0, ids.shape[1]:].tolist()
    ours = generate(tiny_lm, [prompt], config=GenerationConfig(max_new_tokens=10))[0]
    stop = tiny_lm.tokenizer.eos_token_id
    expected = ref_ids[: ref_ids.index(stop)] if stop in ref_ids else ref_ids
    assert ours.token_ids == expected


def test_sampling_is_seeded_and_differs_from_greedy(tiny_lm):
    cfg = GenerationConfig(max_new_tokens=15, do_sample=True, temperature=1.5, seed=3)
    a = generate(tiny_lm, PROMPTS[:2], config=cfg)
    b = generate(tiny_lm, PROMPTS[:2], config=cfg)
    greedy = generate(tiny_lm, PROMPTS[:2], config=GenerationConfig(max_new_tokens=15))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in greedy]


def test_max_tokens_and_finish_reason(tiny_lm):
    # without end-of-sequence stops every row runs to the limit and says so
    out = generate(tiny_lm, PROMPTS, config=GenerationConfig(max_new_tokens=3, stop_on_eos=False))
    assert all(len(o.token_ids) == 3 and o.finish_reason == "length" for o in out)
    # with them, the greedy answer is the same tokens cut at the first end-of-sequence token
    eos = set(stop_token_ids(tiny_lm))
    long = generate(tiny_lm, PROMPTS, config=GenerationConfig(max_new_tokens=12, stop_on_eos=False))
    stopped = generate(tiny_lm, PROMPTS, config=GenerationConfig(max_new_tokens=12))
    for full, cut in zip(long, stopped):
        first_stop = next((i for i, t in enumerate(full.token_ids) if t in eos), None)
        if first_stop is None:
            assert cut.token_ids == full.token_ids and cut.finish_reason == "length"
        else:
            assert cut.token_ids == full.token_ids[:first_stop] and cut.finish_reason == "stop"


def test_stops_on_eos(tiny_lm):
    eos = tiny_lm.tokenizer.eos_token_id
    with torch.no_grad():
        bias = torch.zeros(tiny_lm.model.lm_head.out_features)
        bias[eos] = 1e4
        handle = tiny_lm.model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    try:
        out = generate(tiny_lm, PROMPTS[:2], config=GenerationConfig(max_new_tokens=8))
    finally:
        handle.remove()
    assert all(o.token_ids == [] and o.finish_reason == "stop" for o in out)


def test_next_token_scores_match_generate_first_token(tiny_lm):
    scores = next_token_scores(tiny_lm, PROMPTS)
    firsts = generate(tiny_lm, PROMPTS, config=GenerationConfig(max_new_tokens=1, stop_on_eos=False))
    assert [scores[row].argmax().item() for row in range(len(PROMPTS))] == [o.token_ids[0] for o in firsts]


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(do_sample=True, temperature=0)


def test_a_stop_text_ends_the_answer_where_it_appears(tiny_lm):
    """The answer stops at the step that completes the stop text, and the text is cut before it."""
    from steer_away.chat import plain_text

    (full,) = generate(tiny_lm, [plain_text("the quick brown")], config=GenerationConfig(max_new_tokens=12,
                                                                                           stop_on_eos=False))
    stop = full.text[len(full.text) // 2:len(full.text) // 2 + 2]
    (cut,) = generate(tiny_lm, [plain_text("the quick brown")], config=GenerationConfig(max_new_tokens=12, stop=(stop,),
                                                                                          stop_on_eos=False))
    assert cut.finish_reason == "stop" and len(cut.token_ids) < 12
    assert cut.token_ids == full.token_ids[:len(cut.token_ids)] and stop not in cut.text
    assert full.text.startswith(cut.text)
