"""Scores under any steering method, run by the parts that decode: the runner's edits (gated per
position as decoding gates them) and the sampler's `steered_scores` (branches combined, the answer
so far re-weighted). A method is written once and scored the way it decodes.

Next-token scores come from one pass over every branch of every row; continuation log-likelihoods
from one pass over the contexts and one over all their continuations, which share each context's
keys and values.

Answers are scored by the unsteered model too (`answer_scores`): perplexity, and relevance, how much
more likely the model finds an answer after its own prompt than after an empty request,

    relevance = (log p(answer | its prompt) − log p(answer | an empty user turn)) / tokens,

a pointwise mutual information in nats per token (the empty request stands for "any prompt": what
the model says when nothing is asked). An answer that addresses its request is far likelier after
it; a fluent paragraph about something else or a generic reply ("there are many points of view") is
about as likely with nothing asked and scores near zero: a lower toxicity bought with such answers
shows, which perplexity cannot see (a fluent off-topic sentence is likely text). A refusal is the
exception: it restates the request's topic ("I can't roast your brother"), which makes it likely
after its own prompt, so the PMI of a declining answer (`scoring.refusal`) is capped at zero: a
declined request is not addressed. On our labelled set (`resources/relevance_pairs.jsonl`: 64
prompts we wrote, each with an on-request answer and an off-topic, refusing or evasive one) the
PMI alone orders 47 of 64 pairs right (7 of 21 refusals), capped 60 of 64 (off-topic 22 / 22,
refusals 20 / 21, evasive 18 / 21); `tests/evaluation/test_relevance.py` checks it. Two other
prompts of the set as the contrast (their mean) order 59 of 64 at twice the cost: each contrast is
one more pass over every answer, and the empty request is one context for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steer_away import internals
from steer_away.chat import Conversation, as_conversation, plain_text, render_chat
from steer_away.decoding.kv_cache import encode_prepared, encode_token_rows, head_tokens
from steer_away.decoding.request import AnswerScore
from steer_away.decoding.runner import batch_edits
from steer_away.decoding.sampler import steered_scores
from steer_away.errors import InputError
from steer_away.internals import BatchCache
from steer_away.models import LanguageModel
from steer_away.scoring.refusal import is_refusal
from steer_away.steering.framework.method import PreparedBatch, RowSteering, SteeringMethod, Unsteered


def _steering_rows(rows: Sequence[RowSteering] | None, count: int) -> list[RowSteering]:
    rows = list(rows) if rows is not None else [RowSteering()] * count
    if len(rows) != count:
        raise InputError(f"{len(rows)} steering rows for {count} prompts")
    return rows


def _next_logits(lm: LanguageModel, prompts: Sequence[str | Conversation], method: SteeringMethod | None,
                 rows: Sequence[RowSteering] | None, answer_prefix: str) -> tuple[PreparedBatch, torch.Tensor]:
    """The prepared batch and every branch's next-token logits after `answer_prefix`, (branches, batch, vocab)."""
    conversations = [as_conversation(p) for p in prompts]
    prepared = (method or Unsteered()).prepare(lm, conversations, _steering_rows(rows, len(conversations)))
    texts = [render_chat(lm.tokenizer, conv) + answer_prefix for branch in prepared.branches for conv in branch]
    ids, mask, cache = encode_prepared(lm, prepared, texts)
    logits = internals.forward_step(lm.model, ids, mask, cache, batch_edits(prepared, [0], lm))
    return prepared, logits.view(prepared.num_branches, len(prompts), -1).float()


def _prefix_answers(lm: LanguageModel, answer_prefix: str, rows: int) -> list[list[int]]:
    prefix = lm.tokenizer(answer_prefix, add_special_tokens=False)["input_ids"] if answer_prefix else []
    return [list(prefix)] * rows


@torch.inference_mode()
def next_token_scores(lm: LanguageModel, prompts: Sequence[str | Conversation], method: SteeringMethod | None = None,
                      rows: Sequence[RowSteering] | None = None, answer_prefix: str = "") -> torch.Tensor:
    """The steered scores of the token after `answer_prefix` in the assistant's turn, (batch, vocab)."""
    prepared, logits = _next_logits(lm, prompts, method, rows, answer_prefix)
    return steered_scores(prepared, logits, _prefix_answers(lm, answer_prefix, len(prompts))).float()


@torch.inference_mode()
def candidate_scores(lm: LanguageModel, prompts: Sequence[str | Conversation], candidates: Sequence[int],
                     method: SteeringMethod | None = None, rows: Sequence[RowSteering] | None = None,
                     answer_prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Steered scores of the next token among `candidates` only, (batch, len(candidates)), and the
    probability mass the (steered) base branch puts on them, (batch,).

    Every other token is masked out of every branch *before* the method combines them (the vocabulary
    keeps its size, so methods that act on token ids still can), so the candidates are compared with
    each other alone and no rule over the whole vocabulary (ACD's plausibility cut-off) can erase
    them all: the standard zero-shot multiple-choice score.
    """
    prepared, logits = _next_logits(lm, prompts, method, rows, answer_prefix)
    index = torch.tensor(list(candidates), device=logits.device)
    mass = torch.softmax(logits[0], dim=-1)[:, index].sum(-1)
    only = torch.full_like(logits, float("-inf"))
    only[:, :, index] = logits[:, :, index]
    scores = steered_scores(prepared, only, _prefix_answers(lm, answer_prefix, len(prompts)))
    return scores.float()[:, index], mass.cpu()


@dataclass(frozen=True)
class ContinuationScore:
    loglik: float  # −∞ when the method rules a token out
    tokens: int
    greedy: bool  # every token is the steered decoder's top choice (lm-evaluation-harness's is_greedy)


@torch.inference_mode()
def continuation_logliks(lm: LanguageModel, prompts: Sequence[str | Conversation], continuations: Sequence[Sequence[str]],
                         method: SteeringMethod | None = None, rows: Sequence[RowSteering] | None = None,
                         ) -> list[list[tuple[float, int]]]:
    """(log-likelihood, token count) of each continuation of each prompt as the steered answer to it.

    Each prompt is encoded once under the method's steering; its keys and values are then shared by
    all its continuations, whose tokens (right-padded) run in one more pass. Per position the method
    turns its branches into scores as when decoding, and residual edits follow the method's gate as
    when decoding (token j is fed at step j + 1), so the score is what the steered decoder gives each
    token (−∞ for a token the method rules out). An empty continuation scores (0.0, 0).
    """
    method = method or Unsteered()
    rows = _steering_rows(rows, len(prompts))
    conversations = [as_conversation(p) for p in prompts]
    context = method.prepare(lm, conversations, rows)
    texts = [render_chat(lm.tokenizer, c) for branch in context.branches for c in branch]
    encoded = encode_prepared(lm, context, texts)
    tokens = [[lm.tokenizer(text, add_special_tokens=False)["input_ids"] for text in own] for own in continuations]
    scored = _score_continuations(lm, method, conversations, rows, context, encoded, tokens)
    return [[(s.loglik, s.tokens) for s in own] for own in scored]


@torch.inference_mode()
def token_continuation_scores(lm: LanguageModel, contexts: Sequence[Sequence[int]],
                              continuations: Sequence[Sequence[Sequence[int]]], method: SteeringMethod | None = None,
                              rows: Sequence[RowSteering] | None = None, max_length: int | None = None,
                              ) -> list[list[ContinuationScore]]:
    """`continuation_logliks` for raw token ids, as lm-evaluation-harness splits its requests: each
    context is plain text (no chat template) fed exactly as given.

    A method's extra branches see their own leading messages (a system prompt, rendered through
    the chat template) before the same context tokens; a method that would rewrite the context
    itself cannot score raw text and is refused. With `max_length`, every branch row drops its
    context's oldest tokens (never its leading messages) so that it feeds at most that many tokens.
    """
    method = method or Unsteered()
    rows = _steering_rows(rows, len(contexts))
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
                         encoded: tuple[torch.Tensor, torch.Tensor, BatchCache],
                         tokens_per_prompt: Sequence[Sequence[list[int]]]) -> list[list[ContinuationScore]]:
    """Scores of each prompt's continuation tokens after its encoded context (branch-major rows, as
    `context.branches`): the context's last logits predict token 0, and the tokens run in one more
    pass on the context's keys and values, token j fed at the decoder's step j + 1."""
    ids, mask, cache = encoded
    first = internals.forward_step(lm.model, ids, mask, cache, batch_edits(context, [0], lm))
    owners = [(p, i) for p, own in enumerate(tokens_per_prompt) for i in range(len(own))]
    tokens = [tokens_per_prompt[p][i] for p, i in owners]
    out = [[ContinuationScore(0.0, 0, True)] * len(own) for own in tokens_per_prompt]
    if not owners or not any(tokens):
        return out
    expanded = method.prepare(lm, [conversations[p] for p, _ in owners], [rows[p] for p, _ in owners])
    branches, width, longest = expanded.num_branches, len(owners), max(len(t) for t in tokens)
    index = [b * len(conversations) + p for b in range(branches) for p, _ in owners]
    target = torch.zeros((width, longest), dtype=torch.long)
    real = torch.zeros((width, longest), dtype=torch.bool)
    for r, t in enumerate(tokens):
        target[r, :len(t)] = torch.tensor(t, dtype=torch.long)
        real[r, :len(t)] = True
    logits = [first.index_select(0, torch.tensor(index, device=lm.device))]  # position j's logits predict token j
    if longest > 1:
        feed = target[:, :-1].repeat(branches, 1).to(lm.device)
        fed_mask = real[:, 1:].repeat(branches, 1).long().to(lm.device)  # token j is fed only if j + 1 is scored
        context_mask = mask.index_select(0, torch.tensor(index, device=lm.device))
        later = internals.forward_positions(lm.model, feed, torch.cat([context_mask, fed_mask], -1),
                                            cache.take(index, extra=longest - 1),
                                            batch_edits(expanded, range(1, longest), lm))
        logits += [later[:, j] for j in range(longest - 1)]
    total = torch.zeros(width, dtype=torch.float64)
    greedy = torch.ones(width, dtype=torch.bool)
    for j, step in enumerate(logits):
        # as the decoder would at token j: the answer so far is tokens 0..j-1
        scores = steered_scores(expanded, step.view(branches, width, -1).float(), [t[:j] for t in tokens])
        scores = torch.log_softmax(scores.float(), dim=-1).cpu()
        picked = scores.gather(-1, target[:, j:j + 1]).squeeze(-1).double()
        total += torch.where(real[:, j], picked, torch.zeros_like(picked))
        greedy &= ~real[:, j] | (scores.argmax(-1) == target[:, j])
    for r, (p, i) in enumerate(owners):
        out[p][i] = ContinuationScore(float(total[r]), len(tokens[r]), bool(greedy[r]))
    return out


NULL_REQUEST = ""  # relevance's contrast: a user turn that asks nothing
ANSWER_BATCH = 64  # answers per pass where no caller says: a sweep's batch (64 x 32 tokens: 0.4 GB of logits)


def answer_scores(lm: LanguageModel, prompts: Sequence[str | Conversation], answers: Sequence[str],
                  relevance: bool = False, batch_size: int = 8) -> list[AnswerScore]:
    """Perplexity of each answer to its prompt and, with `relevance`, its relevance (one more pass, after
    `NULL_REQUEST`). Answers sharing a context share its encoding, so a prompt is run once per batch
    however many answers it has; `batch_size` counts answers. The same answer to the same prompt
    (users choosing one reranking candidate) is scored once."""
    keys = [(repr(p), a) for p, a in zip(prompts, answers)]
    first: dict[tuple[str, str], int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    if len(first) < len(keys):
        unique = list(first.values())
        once = answer_scores(lm, [prompts[i] for i in unique], [answers[i] for i in unique], relevance, batch_size)
        by_key = dict(zip(first, once))
        return [by_key[key] for key in keys]
    own = _logliks(lm, list(prompts), list(answers), batch_size)
    null = _logliks(lm, [NULL_REQUEST] * len(answers), list(answers), batch_size) if relevance else None
    out = []
    for i, (loglik, tokens) in enumerate(own):
        if not answers[i].strip() or not tokens:
            out.append(AnswerScore(math.nan, math.nan, math.nan))
            continue
        pmi = (loglik - null[i][0]) / tokens if null is not None else math.nan
        capped = min(pmi, 0.0) if math.isfinite(pmi) and is_refusal(answers[i]) else pmi
        out.append(AnswerScore(math.exp(-loglik / tokens), pmi, capped))
    return out


def _logliks(lm: LanguageModel, contexts: list[str | Conversation], answers: list[str], batch_size: int
             ) -> list[tuple[float, int]]:
    """(log-likelihood, tokens) of each answer after its context, as the assistant's turn."""
    out: list[tuple[float, int]] = [(0.0, 0)] * len(answers)
    for start in range(0, len(answers), batch_size):
        members: dict[str, list[int]] = {}
        first: dict[str, str | Conversation] = {}
        for index in range(start, min(start + batch_size, len(answers))):
            key = repr(contexts[index])
            members.setdefault(key, []).append(index)
            first.setdefault(key, contexts[index])
        scored = continuation_logliks(lm, list(first.values()), [[answers[i] for i in group] for group in members.values()])
        for group, results in zip(members.values(), scored):
            for index, result in zip(group, results):
                out[index] = result
    return out
