import json
import re

import pytest

from steer_away.data.prism import load_prism
from steer_away.data.prompts import SPLIT_FILE, PromptSplit, PromptSplitError, heldout_openings, read_prompt_file


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
    assert read_prompt_file(path) == ["first", "second"]
