"""Which layers the study steers: the CAA study's layer range, mapped onto any model by relative depth.

Study policy, kept out of the model layer (`internals`), which only says how many layers a model
has and parses numeric layer specs.
"""

from __future__ import annotations

from steer_away import internals
from steer_away.internals import LayerError, Model

REFERENCE_DEPTH = 32  # layer ranges in the seeds are given for Llama-3.1-8B's 32 layers
SEED_LAYERS = (16, 22)  # inclusive, from the CAA study
SEED_SPEC = "seed"  # the layer spec that names SEED_LAYERS mapped to the model's depth


def map_layer_range(first: int, last: int, depth: int, reference_depth: int = REFERENCE_DEPTH) -> list[int]:
    """Map an inclusive layer range given for a `reference_depth`-layer model onto `depth` layers.

    Relative depth is kept, so the seeds' 16-22 of 32 becomes 15-20 of 30 for SmolLM2.
    """
    if not 0 <= first <= last < reference_depth:
        raise LayerError(f"layer range {first}-{last} is outside 0-{reference_depth - 1}")
    lo = round(first * depth / reference_depth)
    hi = round(last * depth / reference_depth)
    return list(range(lo, max(lo, hi) + 1))


def default_layers(model: Model) -> list[int]:
    """The study's layers for this model."""
    return map_layer_range(*SEED_LAYERS, depth=internals.num_layers(model))


def parse_layer_spec(spec: str, depth: int | None) -> list[int]:
    """'seed' (the study's layers at this depth) or a numeric spec such as '14-20' or '3,5,7'.

    `depth=None` checks the syntax only (no model at hand yet) and returns [].
    """
    if str(spec).strip() == SEED_SPEC:
        return map_layer_range(*SEED_LAYERS, depth=depth) if depth is not None else []
    return internals.parse_layers(spec, depth)
