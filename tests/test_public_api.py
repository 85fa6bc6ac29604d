"""The flat public API, and the README's Python example run as written (on a tiny random model)."""

import re
from pathlib import Path

import steer_away
from steer_away.profiles import save_profiles
from steer_away.steering.vectors.vector import save_bank
from tests.conftest import make_tiny_lm
from tests.server.helpers import profile, vector

README = Path(__file__).parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"From Python:\n\n```python\n(.*?)```", text, re.S)
    assert found, "README.md has no Python example after 'From Python:'"
    return found.group(1)


def test_every_public_name_is_importable_from_the_package():
    assert all(getattr(steer_away, name, None) is not None for name in steer_away.__all__)
    assert {"load_model", "build_method", "RowSteering", "SteeringResources", "generate"} <= set(steer_away.__all__)


def test_the_readme_example_runs_and_steers_each_user_with_their_own_vector(tmp_path, monkeypatch, tokenizer):
    lm = make_tiny_lm("llama", tokenizer)
    save_bank(tmp_path / "vectors", vector(0), {"user000": vector(1), "user002": vector(2)})
    save_profiles({u: profile(u, "strict") for u in ("user000", "user002")}, tmp_path / "profiles.json", "t")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(steer_away, "load_model", lambda *args, **kwargs: lm)  # the README loads the embedded model
    scope: dict[str, object] = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)  # our own README, not user input
    answers = scope["answers"]
    assert len(answers) == 2
    unsteered = steer_away.generate(lm, ["Roast my roommate."])[0]
    alone = [steer_away.generate(lm, ["Roast my roommate."], method=scope["caa"], rows=[steer_away.RowSteering(u)])[0]
             for u in ("user000", "user002")]
    assert [a.token_ids for a in answers] == [a.token_ids for a in alone]  # batched as alone: each row its own vector
    assert answers[0].token_ids != answers[1].token_ids
    assert unsteered.token_ids not in (answers[0].token_ids, answers[1].token_ids)
