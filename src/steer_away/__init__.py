"""steer-away: per-user toxicity alignment of a frozen chat LLM by steering, with no training."""

from steer_away.generation import Generation, GenerationConfig, generate
from steer_away.models import LoadedModel, load_model

__all__ = ["Generation", "GenerationConfig", "LoadedModel", "generate", "load_model"]
__version__ = "0.1.0"
