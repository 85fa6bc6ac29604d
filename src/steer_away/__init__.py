"""steer-away: per-user toxicity alignment of a frozen chat LLM by steering, with no training.

The library's entry points, importable from here in one line (the modules behind them are the
pipeline's floors, docs/architecture.md):

    from steer_away import load_model, build_method, RowSteering, SteeringResources, generate
"""

from steer_away.errors import InputError
from steer_away.generation import Generation, GenerationConfig, generate
from steer_away.models import LoadedModel, load_model
from steer_away.profiles import UserProfile, build_profiles, load_profiles
from steer_away.scoring.registry import make_scorer
from steer_away.steering.framework.arguments import MethodArgs
from steer_away.steering.framework.method import RowSteering, SteeringMethod
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.registry import build_method, method_names
from steer_away.steering.vectors.vector import SteeringVector, load_bank

__all__ = [
    "Generation",
    "GenerationConfig",
    "InputError",
    "LoadedModel",
    "MethodArgs",
    "RowSteering",
    "SteeringMethod",
    "SteeringResources",
    "SteeringVector",
    "UserProfile",
    "build_method",
    "build_profiles",
    "generate",
    "load_bank",
    "load_model",
    "load_profiles",
    "make_scorer",
    "method_names",
]
__version__ = "0.1.0"
