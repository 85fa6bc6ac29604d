import json
import re

import pytest

from steer_away.data.categories import CATEGORIES
from steer_away.data.prism import load_prism
from steer_away.data.prompts import (
    SPLIT_FILE,
    EvalPrompt,
    PromptFileError,
    PromptOverlapError,
    PromptSplit,
    PromptSplitError,
    heldout_openings,
    pick_per_category,
    prompt_id,
    read_eval_prompts,
    refuse_overlap,
    training_prompts,
)


def test_default_held_out_openings_are_today_s():
    # the default split picks these openings of the stand-in, round-robin over categories
    openings = heldout_openings(None, 4)
    assert len(openings) == 4 and len(set(openings)) == 4
    train, held = PromptSplit().pairs(load_prism(None).turns)
    assert set(openings) <= {p.opening for p in held}
    assert not set(openings) & {p.opening for p in train}


def test_split_round_trips_and_is_found_from_a_bank_or_a_vector_file(tmp_path):
    split = PromptSplit(holdout=0.5, seed=3, min_margin=1.0)
    split.save(tmp_path / "store")
    (tmp_path / "store" / "dislike" / "users").mkdir(parents=True)
    assert PromptSplit.stored_with(tmp_path / "store") == split
    assert PromptSplit.stored_with(tmp_path / "store" / "dislike") == split
    assert PromptSplit.stored_with(tmp_path / "store" / "population.safetensors") == split
    assert PromptSplit.stored_with(tmp_path / "elsewhere") == PromptSplit()  # a store from before stored splits
    assert PromptSplit.stored_with(None) == PromptSplit()


def test_held_out_openings_follow_the_stored_split(tmp_path):
    PromptSplit(holdout=0.5, seed=3).save(tmp_path)
    stored = heldout_openings(None, 50, PromptSplit.stored_with(tmp_path))
    _, held = PromptSplit(holdout=0.5, seed=3).pairs(load_prism(None).turns)
    assert stored == heldout_openings(None, 50, PromptSplit(holdout=0.5, seed=3))
    assert set(stored) == {p.opening for p in held}
    assert stored != heldout_openings(None, 50)


@pytest.mark.parametrize("content, message", [
    ({"holdout": 0.3}, "not a steer-away prompt split"),
    ({"format": "steer-away/prompt-split@1", "holdout": 2}, "holdout must be a number in [0, 1]"),
    ({"format": "steer-away/prompt-split@1", "seed": "x"}, "seed must be a whole number"),
    ({"format": "steer-away/prompt-split@1", "shuffle": True}, "unknown field 'shuffle'"),
])
def test_bad_split_files_are_refused(tmp_path, content, message):
    (tmp_path / SPLIT_FILE).write_text(json.dumps(content))
    with pytest.raises(PromptSplitError, match=re.escape(message)):
        PromptSplit.stored_with(tmp_path)


def test_prompt_file_skips_blank_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("  first \n\nsecond\n")
    assert [p.text for p in read_eval_prompts(path)] == ["first", "second"]


def test_shipped_evaluation_set_is_balanced_and_disjoint_from_the_stand_in_training_prompts():
    prompts = read_eval_prompts()
    assert len(prompts) >= 200 and len({p.prompt_id for p in prompts}) == len(prompts)
    per_category = {c: sum(p.category == c for p in prompts) for c in CATEGORIES}
    assert min(per_category.values()) >= 40
    assert len({p.cluster for p in prompts}) >= 20
    train, _ = PromptSplit().pairs(load_prism(None).turns)
    refuse_overlap(prompts, training_prompts(train), "shipped")  # raises if any prompt trained a vector


def test_a_prompt_that_trained_a_vector_is_refused(tmp_path):
    train, _ = PromptSplit().pairs(load_prism(None).turns)
    trained = train[0].opening
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "Something new to ask?"}) + "\n"
                    + json.dumps({"id": "b", "prompt": "  " + trained.upper() + " "}) + "\n")
    prompts = read_eval_prompts(path)
    with pytest.raises(PromptOverlapError, match="'b'"):
        refuse_overlap(prompts, training_prompts(train), str(path))


def test_prompt_files_plain_and_json_lines(tmp_path):
    plain = tmp_path / "p.txt"
    plain.write_text("Roast my lazy roommate.\nWhat is a good pasta sauce?\n")
    first, second = read_eval_prompts(plain)
    assert first.category == "harmful_borderline" and second.category == "benign_control"  # by the rule
    assert first.prompt_id == prompt_id("Roast my lazy roommate.")
    lines = tmp_path / "p.jsonl"
    lines.write_text(json.dumps({"id": "x1", "prompt": "Tell me about grief.", "category": "benign_control",
                                 "cluster": "health"}) + "\n")
    (only,) = read_eval_prompts(lines)
    assert only == EvalPrompt("x1", "Tell me about grief.", "benign_control", "health", "unguided")  # file wins


@pytest.mark.parametrize("line, message", [
    ('{"id": "x", "prompt": ""}', "line 2: field 'prompt' must be non-empty text"),
    ('{"id": "x", "prompt": "hi", "category": "rude"}', "line 2: field 'category' is 'rude'"),
    ('{"id": "x", "prompt": "hi", "topic": "y"}', "line 2: unknown field 'topic'"),
    ('{"id": "a", "prompt": "again"}', "line 2: prompt id 'a' repeats line 1"),
    ('{"id": "x", "prompt": "hi"', "line 2 is not valid JSON"),
])
def test_bad_prompt_files_name_the_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "prompt": "fine"}\n' + line + "\n")
    with pytest.raises(PromptFileError, match=re.escape(message)):
        read_eval_prompts(path)


def test_pick_per_category_is_seeded_and_stratified():
    prompts = read_eval_prompts()
    picked = pick_per_category(prompts, 15, seed=0)
    assert len(picked) == 60 and {sum(p.category == c for p in picked) for c in CATEGORIES} == {15}
    assert picked == pick_per_category(prompts, 15, seed=0)
    assert picked != pick_per_category(prompts, 15, seed=1)
    assert pick_per_category(prompts, None) == sorted(prompts, key=lambda p: (p.category, prompts.index(p)))
