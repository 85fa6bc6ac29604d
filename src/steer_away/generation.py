"""Generation and next-token scores under any steering method: the library's entry points.

`generate` answers a batch of prompts through the same decode loop the server runs (decoding.py):
each prompt is one request, all join at the first step and leave as they end. The scoring
functions run a single forward pass over every branch of every row and combine the branches'
logits the way the method decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from steer_away import internals
from steer_away.chat import Conversation, as_conversation, plain_text, render_chat
from steer_away.decoding import (
    DecodeLoop,
    Generation,
    GenerationConfig,
    encode_prepared,
    encode_token_rows,
    head_tokens,
    requests_for,
    select_rows,
    stop_token_ids,
)
from steer_away.errors import InputError
from steer_away.models import LanguageModel
from steer_away.steering.base import PreparedBatch, RowSteering, SteeringMethod, Unsteered

__all__ = ["ContinuationScore", "Generation", "GenerationConfig", "candidate_scores", "continuation_logliks",
           "encode_prepared", "generate", "next_token_scores", "stop_token_ids", "token_continuation_scores"]


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
    loop = DecodeLoop(lm, isolate_failures=False)
    for request in requests:
        loop.add(request)
    while not loop.idle:
        for ended in loop.step():
            if ended.error is not None:  # an offline run stops at its first error, as it always did
                raise ended.error
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
    return _steered(lm, prepared, logits, answer_prefix).float()


def _steered(lm: LanguageModel, prepared: PreparedBatch, logits: torch.Tensor, answer_prefix: str) -> torch.Tensor:
    """The scores a decoder picks the token after `answer_prefix` from: the branches combined and, for a
    method that reads the answer so far, re-weighted by it."""
    scores = prepared.combine(logits)
    if not prepared.reads_answer:
        return scores
    prefix = lm.tokenizer(answer_prefix, add_special_tokens=False)["input_ids"] if answer_prefix else []
    return prepared.rescore(scores, [prefix] * scores.shape[0])


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
    return _steered(lm, prepared, only, answer_prefix).float()[:, index], mass.cpu()


def _gated_scope(prepared: PreparedBatch, lm: LanguageModel, step: int) -> AbstractContextManager[object]:
    """The batch's edits for a pass at the decoder's `step` (0: prefill), as its gate says; gates only
    ever open a first run of steps, so a pass is all in or all out."""
    gate = prepared.edits.gate if prepared.edits is not None else None
    return prepared.scope(lm.model) if gate is None or gate(step) else nullcontext()


@dataclass(frozen=True)
class ContinuationScore:
    loglik: float  # −∞ when the method rules a token out
    tokens: int
    greedy: bool  # every token is the steered decoder's top choice (lm-evaluation-harness's is_greedy)


@torch.inference_mode()
def continuation_logliks(
    lm: LanguageModel,
    prompts: Sequence[str | Conversation],
    continuations: Sequence[Sequence[str]],
    method: SteeringMethod | None = None,
    rows: Sequence[RowSteering] | None = None,
) -> list[list[tuple[float, int]]]:
    """(log-likelihood, token count) of each continuation of each prompt as the steered answer to it.

    Each prompt is encoded once under the method's steering; its keys and values are then shared by
    all its continuations, whose tokens (right-padded) run in one more pass. Per position the method
    combines its branches' logits as when decoding, and residual edits follow the method's gate as
    when decoding (token j is fed at step j + 1), so the score is what the steered decoder gives each
    token (−∞ for a token the method rules out). An empty continuation scores (0.0, 0).
    """
    method = method or Unsteered()
    rows = list(rows) if rows is not None else [RowSteering()] * len(prompts)
    conversations = [as_conversation(p) for p in prompts]
    context = method.prepare(lm, conversations, rows)
    texts = [render_chat(lm.tokenizer, c) for branch in context.branches for c in branch]
    encoded = encode_prepared(lm, context, texts)
    tokens = [[lm.tokenizer(text, add_special_tokens=False)["input_ids"] for text in own] for own in continuations]
    scored = _score_continuations(lm, method, conversations, rows, context, encoded, tokens)
    return [[(s.loglik, s.tokens) for s in own] for own in scored]


@torch.inference_mode()
def token_continuation_scores(
    lm: LanguageModel,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    method: SteeringMethod | None = None,
    rows: Sequence[RowSteering] | None = None,
    max_length: int | None = None,
) -> list[list[ContinuationScore]]:
    """`continuation_logliks` for raw token ids, as lm-evaluation-harness splits its requests: each
    context is plain text (no chat template) fed exactly as given.

    A method's extra branches see their own leading messages (a system prompt, rendered through
    the chat template) before the same context tokens; a method that would rewrite the context
    itself cannot score raw text and is refused. With `max_length`, every branch row drops its
    context's oldest tokens (never its leading messages) so that it feeds at most that many tokens.
    """
    method = method or Unsteered()
    rows = list(rows) if rows is not None else [RowSteering()] * len(contexts)
    tok = lm.tokenizer
    conversations = [plain_text(tok.decode(list(ids))) for ids in contexts]
    context = method.prepare(lm, conversations, rows)
    feed: list[tuple[Conversation | None, list[int]]] = []
    memo: dict[str, tuple[str, list[int]]] = {}
    for branch in context.branches:
        for index, (conversation, own) in enumerate(zip(branch, conversations)):
            if conversation[-1:] != own:
                raise InputError(f"{method.name} rewrites the prompt itself, so it cannot score plain-text contexts")
            head = conversation[:-1] or None
            ids = list(contexts[index])
            if max_length is not None:  # fed: head + context + every continuation token but the last
                head_length = len(head_tokens(lm, head, memo)[1])
                keep = max_length + 1 - head_length - max((len(c) for c in continuations[index]), default=1)
                if keep < 1:
                    raise InputError(f"a continuation of {max(map(len, continuations[index]))} tokens after "
                                     f"{head_length} tokens of {method.name}'s own context exceeds max_length "
                                     f"{max_length}; score shorter windows (a smaller max_length)")
                ids = ids[-keep:]
            feed.append((head, ids))
    encoded = encode_token_rows(lm, feed)
    tokens = [[list(t) for t in own] for own in continuations]
    return _score_continuations(lm, method, conversations, rows, context, encoded, tokens)


def _score_continuations(lm: LanguageModel, method: SteeringMethod, conversations: Sequence[Conversation],
                         rows: Sequence[RowSteering], context: PreparedBatch,
                         encoded: tuple[torch.Tensor, torch.Tensor, object],
                         tokens_per_prompt: Sequence[Sequence[list[int]]]) -> list[list[ContinuationScore]]:
    """Scores of each prompt's continuation tokens after its encoded context (branch-major rows, as
    `context.branches`): the context's last logits predict token 0, and the tokens run in one more
    pass on the context's keys and values."""
    ids, mask, cache = encoded
    with _gated_scope(context, lm, 0):
        first = internals.forward_step(lm.model, ids, mask, cache)  # (branches·prompts, vocab)
    owners = [(p, i) for p, own in enumerate(tokens_per_prompt) for i in range(len(own))]
    tokens = [tokens_per_prompt[p][i] for p, i in owners]
    out = [[ContinuationScore(0.0, 0, True)] * len(own) for own in tokens_per_prompt]
    if not owners or not any(tokens):
        return out
    expanded = method.prepare(lm, [conversations[p] for p, _ in owners], [rows[p] for p, _ in owners])
    branches, width, longest = expanded.num_branches, len(owners), max(len(t) for t in tokens)
    index = torch.tensor([b * len(conversations) + p for b in range(branches) for p, _ in owners], device=lm.device)
    target = torch.zeros((width, longest), dtype=torch.long)
    real = torch.zeros((width, longest), dtype=torch.bool)
    for r, t in enumerate(tokens):
        target[r, :len(t)] = torch.tensor(t, dtype=torch.long)
        real[r, :len(t)] = True
    logits = [first.index_select(0, index)]  # position j's logits predict continuation token j
    if longest > 1:
        # Token j is fed at the decoder's step j + 1: steps the method's gate closes run without its edits.
        feed = target[:, :-1].repeat(branches, 1).to(lm.device)
        fed_mask = real[:, 1:].repeat(branches, 1).long().to(lm.device)  # token j is fed only if j + 1 is scored
        context_mask, expanded_cache = mask.index_select(0, index), select_rows(lm, cache, index)
        gate = expanded.edits.gate if expanded.edits is not None else None
        steered = next((j for j in range(longest - 1) if gate is not None and not gate(j + 1)), longest - 1)
        for start, stop in ((0, steered), (steered, longest - 1)):
            if stop > start:
                with _gated_scope(expanded, lm, start + 1):
                    later = internals.forward_positions(lm.model, feed[:, start:stop],
                                                        torch.cat([context_mask, fed_mask[:, :stop]], -1),
                                                        expanded_cache)
                logits += [later[:, j] for j in range(stop - start)]
    total = torch.zeros(width, dtype=torch.float64)
    greedy = torch.ones(width, dtype=torch.bool)
    for j, step in enumerate(logits):
        scores = expanded.combine(step.view(branches, width, -1).float())
        if expanded.reads_answer:  # as the decoder would at token j: the answer so far is tokens 0..j-1
            scores = expanded.rescore(scores, [t[:j] for t in tokens])
        scores = torch.log_softmax(scores.float(), dim=-1).cpu()
        picked = scores.gather(-1, target[:, j:j + 1]).squeeze(-1).double()
        total += torch.where(real[:, j], picked, torch.zeros_like(picked))
        greedy &= ~real[:, j] | (scores.argmax(-1) == target[:, j])
    for r, (p, i) in enumerate(owners):
        out[p][i] = ContinuationScore(float(total[r]), len(tokens[r]), bool(greedy[r]))
    return out
