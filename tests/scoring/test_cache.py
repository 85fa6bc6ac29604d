import numpy as np

from steer_away.scoring.base import ToxicityScorer
from steer_away.scoring.cache import CachedScorer, ScoreCache


class CountingScorer(ToxicityScorer):
    """Synthetic backend: score = length-based numbers, counts every text it sees."""

    backend = "counting"
    attributes = ("TOXICITY", "INSULT")

    def __init__(self):
        self.seen = []

    def score_batch(self, texts):
        self.seen.extend(texts)
        return np.array([[len(t) / 100, len(t) / 200] for t in texts])


def test_rerun_makes_zero_backend_calls(tmp_path):
    path = tmp_path / "scores.sqlite"
    inner = CountingScorer()
    scorer = CachedScorer(inner, ScoreCache(path), batch_size=2)
    texts = ["a", "bb", "a", "ccc", "dddd"]
    first = scorer.score(texts)
    assert inner.seen == ["a", "bb", "ccc", "dddd"]  # duplicates scored once
    assert scorer.backend_calls == 4
    np.testing.assert_allclose(first[:, 0], [0.01, 0.02, 0.01, 0.03, 0.04])
    again = CachedScorer(CountingScorer(), ScoreCache(path))  # fresh process, same file
    np.testing.assert_allclose(again.score(texts), first)
    assert again.backend_calls == 0 and again.inner.seen == [] and again.cache_hits == 5


def test_backends_do_not_share_scores(tmp_path):
    cache = ScoreCache(tmp_path / "s.sqlite")
    a = CachedScorer(CountingScorer(), cache)
    a.score(["x"])
    other = CountingScorer()
    other.backend = "other"
    b = CachedScorer(other, cache)
    b.score(["x"])
    assert b.backend_calls == 1
