"""Generation and scores under any steering method: the library's entry points.

`generate` answers a batch of prompts through the decode engine the server runs (`decoding/`):
each prompt is one request, all join at the first step and leave as they end. The scoring
functions (next-token scores, continuation log-likelihoods) run the same edits and the same rule
for turning branches into scores (`decoding.scoring`).
"""

from __future__ import annotations

from collections.abc import Sequence

from steer_away.chat import Conversation
from steer_away.decoding import (
    DecodeEngine,
    Generation,
    GenerationConfig,
    encode_prepared,
    requests_for,
    run_requests,
    stop_token_ids,
)
from steer_away.decoding.scoring import (
    ContinuationScore,
    candidate_scores,
    continuation_logliks,
    next_token_scores,
    token_continuation_scores,
)
from steer_away.models import LanguageModel
from steer_away.steering.framework.method import RowSteering, SteeringMethod

__all__ = ["ContinuationScore", "Generation", "GenerationConfig", "candidate_scores", "continuation_logliks",
           "encode_prepared", "generate", "next_token_scores", "stop_token_ids", "token_continuation_scores"]


def generate(
    lm: LanguageModel,
    prompts: Sequence[str | Conversation],
    method: SteeringMethod | None = None,
    rows: Sequence[RowSteering] | None = None,
    config: GenerationConfig | None = None,
    seeds: Sequence[int | None] | None = None,
) -> list[Generation]:
    """Generate one answer per prompt; `rows` says which user (and α) each prompt is steered for.

    `seeds` gives each row its own sampling seed, so a seeded row samples the same text whatever
    shares its batch. Greedy answers do not depend on the batch either. An offline run stops at its
    first error.
    """
    config = config or GenerationConfig()
    requests = requests_for(prompts, method, rows, config, seeds, device=lm.device)
    run_requests(DecodeEngine(lm, isolate_failures=False), requests)
    return [request.result(lm) for request in requests]
