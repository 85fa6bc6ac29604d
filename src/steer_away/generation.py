"""Generation and next-token scores under any steering method: the library's entry points.

`generate` answers a batch of prompts through the same decode loop the server runs (decoding.py):
each prompt is one request, all join at the first step and leave as they end. The scoring
functions run a single forward pass over every branch of every row and combine the branches'
logits the way the method decodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steer_away import internals
from steer_away.chat import Conversation, as_conversation, render_chat
from steer_away.decoding import (
    DecodeLoop,
    Generation,
    GenerationConfig,
    encode_prepared,
    requests_for,
    stop_token_ids,
)
from steer_away.errors import InputError
from steer_away.models import LanguageModel
from steer_away.steering.base import PreparedBatch, RowSteering, SteeringMethod, Unsteered

__all__ = ["Generation", "GenerationConfig", "candidate_scores", "encode_prepared", "generate",
           "next_token_scores", "stop_token_ids"]


def _prepare(lm: LanguageModel, prompts: Sequence[str | Conversation], method: SteeringMethod | None,
             rows: Sequence[RowSteering] | None, answer_prefix: str = "") -> tuple[PreparedBatch, list[str]]:
    conversations = [as_conversation(p) for p in prompts]
    rows = list(rows) if rows is not None else [RowSteering()] * len(conversations)
    if len(rows) != len(conversations):
        raise InputError(f"{len(rows)} steering rows for {len(conversations)} prompts")
    prepared = (method or Unsteered()).prepare(lm, conversations, rows)
    texts = [render_chat(lm.tokenizer, conv) + answer_prefix for branch in prepared.branches for conv in branch]
    return prepared, texts


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
    shares its batch. Greedy answers do not depend on the batch either.
    """
    config = config or GenerationConfig()
    requests = requests_for(prompts, method, rows, config, seeds, device=lm.device)
    loop = DecodeLoop(lm)
    for request in requests:
        loop.add(request)
    loop.run()
    return [request.result(lm) for request in requests]


def _next_token_logits(lm: LanguageModel, prompts: Sequence[str | Conversation], method: SteeringMethod | None,
                       rows: Sequence[RowSteering] | None, answer_prefix: str) -> tuple[PreparedBatch, torch.Tensor]:
    """The prepared batch and every branch's next-token logits, (branches, batch, vocab)."""
    prepared, texts = _prepare(lm, prompts, method, rows, answer_prefix)
    input_ids, mask, cache = encode_prepared(lm, prepared, texts)
    with prepared.scope(lm.model):
        logits = internals.forward_step(lm.model, input_ids, mask, cache)
    return prepared, logits.view(prepared.num_branches, len(prompts), -1).float()


@torch.inference_mode()
def next_token_scores(
    lm: LanguageModel,
    prompts: Sequence[str | Conversation],
    method: SteeringMethod | None = None,
    rows: Sequence[RowSteering] | None = None,
    answer_prefix: str = "",
) -> torch.Tensor:
    """The steered scores of the token after `answer_prefix` in the assistant's turn, (batch, vocab)."""
    prepared, logits = _next_token_logits(lm, prompts, method, rows, answer_prefix)
    return prepared.combine(logits).float()


@torch.inference_mode()
def candidate_scores(
    lm: LanguageModel,
    prompts: Sequence[str | Conversation],
    candidates: Sequence[int],
    method: SteeringMethod | None = None,
    rows: Sequence[RowSteering] | None = None,
    answer_prefix: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steered scores of the next token among `candidates` only, (batch, len(candidates)), and the
    probability mass the (steered) base branch puts on them, (batch,).

    Every other token is masked out of every branch *before* the method combines them (the vocabulary
    keeps its size, so methods that act on token ids still can), so the candidates are compared with
    each other alone and no rule over the whole vocabulary (ACD's plausibility cut-off) can erase
    them all: the standard zero-shot multiple-choice score.
    """
    prepared, logits = _next_token_logits(lm, prompts, method, rows, answer_prefix)
    index = torch.tensor(list(candidates), device=logits.device)
    mass = torch.softmax(logits[0], dim=-1)[:, index].sum(-1)
    only = torch.full_like(logits, float("-inf"))
    only[:, :, index] = logits[:, :, index]
    return prepared.combine(only).float()[:, index], mass.cpu()
