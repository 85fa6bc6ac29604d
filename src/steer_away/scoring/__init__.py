"""Toxicity scoring: one interface, several backends, one on-disk cache."""

from steer_away.scoring.base import ATTRIBUTES, ToxicityScorer
from steer_away.scoring.cache import CachedScorer, ScoreCache
from steer_away.scoring.registry import make_scorer

__all__ = ["ATTRIBUTES", "CachedScorer", "ScoreCache", "ToxicityScorer", "make_scorer"]
