"""The scorer registry: one line registers a backend, names resolve (aliases, the hf: family), typos are refused."""

from collections.abc import Sequence

import numpy as np
import pytest

from steer_away.scoring.base import ScorerError, ToxicityScorer
from steer_away.scoring.cache import CachedScorer
from steer_away.scoring.registry import (
    BACKENDS,
    DEFAULT_BACKEND,
    check_scorer_name,
    find_scorer,
    make_scorer,
    register_scorer,
    scorer_entries,
    unregister_scorer,
)


class LengthScorer(ToxicityScorer):
    """Synthetic: a text's TOXICITY is its length over 100, capped at 1."""

    backend = "length-test"
    attributes = ("TOXICITY",)

    def __init__(self, scale: float = 100.0) -> None:
        self.scale = scale

    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[min(len(t) / self.scale, 1.0)] for t in texts])


def test_one_line_registers_a_backend_that_make_scorer_builds_and_caches(tmp_path):
    register_scorer(LengthScorer, "a test scorer", aliases=("length",))
    try:
        scorer = make_scorer("length", cache_path=tmp_path / "s.sqlite", scale=10.0)
        assert isinstance(scorer, CachedScorer) and scorer.backend == "length-test"
        assert scorer.score(["abcde", "a" * 40]).tolist() == [[0.5], [1.0]] and scorer.backend_calls == 2
        assert "length-test" in [entry.name for entry in scorer_entries()]
    finally:
        unregister_scorer("length-test")
    with pytest.raises(ScorerError, match="unknown scorer 'length'"):
        check_scorer_name("length")


def test_names_resolve_to_their_backend():
    assert find_scorer("offline")[0] is find_scorer(DEFAULT_BACKEND)[0]
    entry, spec = find_scorer("hf:unitary/toxic-bert?device=cpu")
    assert entry.family and spec == "unitary/toxic-bert?device=cpu"
    assert BACKENDS == ("jigsaw-bilstm", "detoxify", "perspective", "hf:<hub id or local folder>")


def test_a_misspelt_name_is_refused_with_a_suggestion():
    with pytest.raises(ScorerError, match="did you mean 'perspective'"):
        check_scorer_name("perspectiv")


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_scorer(LengthScorer, "again", aliases=("offline",))
