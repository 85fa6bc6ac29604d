from steer_away.evaluation.demo import DEMO_PREFACE, demo_config, demo_preface


def test_quick_demo_config_is_small_and_writes_where_asked(tmp_path):
    full, quick = demo_config(str(tmp_path / "a")), demo_config(str(tmp_path / "b"), quick=True)
    assert full.out == str(tmp_path / "a") and quick.out == str(tmp_path / "b")
    assert (quick.users_per_sensitivity, quick.prompts_per_category, quick.max_new_tokens) == (1, 1, 24)
    assert (quick.mmlu_limit, quick.n_pairs) == (8, 48)
    assert full.users_per_sensitivity > 1


def test_preface_counts_users_and_prompts_of_the_config(tmp_path):
    config = demo_config(str(tmp_path), quick=True)
    text = demo_preface(config)
    assert text.startswith(DEMO_PREFACE[:30])
    assert "answers 4 opening prompts (our evaluation set" in text and "for 3 users" in text
    assert "8 multiple-choice questions (cloze form, acc_norm)" in text


def test_demo_answers_60_shipped_prompts_and_other_data_brings_its_held_out_prompts(tmp_path):
    config = demo_config(str(tmp_path))
    assert (config.prompts, 4 * config.prompts_per_category, 3 * config.users_per_sensitivity) == ("shipped", 60, 9)
    hub = demo_config(str(tmp_path), prism="hub")
    assert (hub.prism, hub.prompts) == ("hub", "heldout")
    assert demo_config(str(tmp_path), prism="hub", prompts="mine.jsonl").prompts == "mine.jsonl"
    assert "held-out PRISM opening prompts" in demo_preface(hub)
