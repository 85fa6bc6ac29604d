"""Decoding, structured as serving engines structure it: requests with a life cycle (`request`), a
pure-Python scheduler that is the only admission policy (`scheduler`), every cut and splice of the
KV cache (`kv_cache`), one forward pass with stacked edits (`runner`), and token picking for whole
groups of requests (`sampler`), driven by `loop.DecodeLoop`: step = schedule → execute → update.
"""

from steer_away.decoding.kv_cache import encode_prepared, encode_rows, encode_token_rows, head_tokens, select_rows
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

__all__ = ["JOIN_POLICIES", "DecodeLoop", "DecodeRequest", "Generation", "GenerationConfig", "JoinPolicy",
           "RequestStatus", "cut_at_stop", "encode_prepared", "encode_rows", "encode_token_rows", "head_tokens",
           "join_policy_named", "requests_for", "select_rows", "stop_prefix_length", "stop_token_ids"]
