"""What a server operator sets: limits, batching, authentication."""

from __future__ import annotations

from dataclasses import dataclass

from steer_away.decoding.runner import MIN_CHUNK_COLUMNS
from steer_away.errors import InputError


@dataclass
class ServerSettings:
    model_name: str = "steer-away"
    default_method: str | None = None  # None: a per-user vector method when vectors are given, else the baseline
    api_key: str | None = None
    max_batch: int = 8
    batch_window_s: float = 0.02  # with nothing running, how long the worker waits for company for the first request
    scheduler: str = "continuous"  # when waiting requests join: "continuous" (any step) or "static" (an emptied batch)
    max_queue: int = 64
    max_tokens_limit: int = 512
    max_messages: int = 64
    max_request_bytes: int = 64_000
    default_max_tokens: int = 128
    max_prompt_tokens: int = 2048  # and never more than the model's context less max_tokens and steering prompts
    admin_without_key: bool = False  # /admin/reload with no --api-key: only when listening on loopback
    stall_after_s: float = 120.0  # /health reports the worker stalled after this long without a decoding step
    prefill_chunk: int | None = 512  # prompt tokens prefilled per step beside the running decodes; None: whole prompts
    feedback_path: str | None = None  # SQLite file of users' choices (POST /v1/feedback); None: feedback is off
    feedback_rate: float = 5.0  # feedback events a second per user (then 429)
    feedback_burst: int = 20  # ... in bursts of at most this many

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():  # "" would read as "no key": auth off
            raise InputError("server setting api_key is empty; give a key, or None to serve without one")
        for name in ("max_batch", "max_queue", "max_tokens_limit", "max_messages", "max_request_bytes",
                     "default_max_tokens", "max_prompt_tokens"):
            if getattr(self, name) < 1:  # 0 would accept requests that can never run
                raise InputError(f"server setting {name} must be at least 1, got {getattr(self, name)}")
        if self.prefill_chunk is not None and self.prefill_chunk < MIN_CHUNK_COLUMNS:
            raise InputError(f"server setting prefill_chunk must be at least {MIN_CHUNK_COLUMNS} tokens (or off), "
                             f"got {self.prefill_chunk}")
