"""Decoding, structured as serving engines structure it: requests with a life cycle (`request`), a
pure-Python scheduler that is the only admission policy (`scheduler`), the rows of the KV cache
(`kv_cache`), forward passes with stacked edits (`runner`), token picking for whole groups of
requests (`sampler`), driven by `loop.DecodeLoop`: step = schedule → execute → update. In front of
it `engine.DecodeEngine` turns requests that choose among whole answers into parent requests, and
`scoring` scores texts with the same runner and sampler rules.
"""

from steer_away.decoding.engine import DecodeEngine, run_requests
from steer_away.decoding.kv_cache import encode_prepared, encode_rows, encode_token_rows, head_tokens
from steer_away.decoding.loop import DecodeLoop, stop_token_ids
from steer_away.decoding.request import (
    DecodeRequest,
    Generation,
    GenerationConfig,
    RequestStatus,
    cut_at_stop,
    requests_for,
    stop_prefix_length,
)
from steer_away.decoding.scheduler import JOIN_POLICIES, JoinPolicy, join_policy_named

__all__ = ["JOIN_POLICIES", "DecodeEngine", "DecodeLoop", "DecodeRequest", "Generation", "GenerationConfig",
           "JoinPolicy", "RequestStatus", "cut_at_stop", "encode_prepared", "encode_rows", "encode_token_rows",
           "head_tokens", "join_policy_named", "requests_for", "run_requests", "stop_prefix_length",
           "stop_token_ids"]
