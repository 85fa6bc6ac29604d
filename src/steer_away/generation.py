"""Chat-templated, batched decoding of a frozen model under any steering method.

One small decode loop serves every method: the method's branches (base, expert, anti-expert, …)
are stacked into one left-padded batch, each step is one forward pass over all of them with a
shared KV cache, and the method combines the branches' logits before a token is picked. The
picked token is fed to every branch of its row.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from steer_away import internals
from steer_away.chat import Conversation, as_conversation, encode, render_chat, render_prefix
from steer_away.models import LanguageModel
from steer_away.steering.base import PreparedBatch, RowSteering, SteeringMethod, Unsteered


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    do_sample: bool = False  # greedy by default, as in the CAA study, to remove sampling noise
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_on_eos: bool = True  # False: always max_new_tokens tokens (benchmarks need equal lengths)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError("sampling needs temperature > 0 and 0 < top_p <= 1")

    def score_processors(self) -> LogitsProcessorList:
        """The edits applied to the steered scores before a token is drawn, in transformers'
        `LogitsProcessor` convention (`(input_ids, scores) -> scores`), so any of theirs can join."""
        processors = LogitsProcessorList()
        if self.do_sample:
            if self.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(self.temperature))
            if self.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.top_p))
        return processors


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (end-of-sequence token), "length", or "cancelled" (by on_step)


def stop_token_ids(lm: LanguageModel) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(lm.model, "generation_config", None), lm.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


def _pick(scores: torch.Tensor, config: GenerationConfig, processors: LogitsProcessorList,
          history: torch.Tensor, generators: list[torch.Generator | None] | torch.Generator | None) -> torch.Tensor:
    """Greedy, or a draw per row; with one generator per row, a row's draw depends on its seed alone."""
    if not config.do_sample:
        return scores.argmax(dim=-1)
    scores = processors(history, scores.float())  # type: ignore[arg-type]  # LongTensor is an alias of Tensor
    probs = torch.softmax(scores, dim=-1)
    if isinstance(generators, list):
        return torch.cat([torch.multinomial(probs[i:i + 1], 1, generator=g).squeeze(-1)
                          for i, g in enumerate(generators)])
    return torch.multinomial(probs, 1, generator=generators).squeeze(-1)


_PREFIX_KV: OrderedDict[tuple[int, str], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
_PREFIX_KV_SIZE = 16  # shared prefixes kept (a category's expert and anti-expert contexts: a few MiB each)


def _shared_kv(lm: LanguageModel, text: str, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    key = (id(lm.model), text)
    if key in _PREFIX_KV:
        _PREFIX_KV.move_to_end(key)
        return _PREFIX_KV[key]
    kv = internals.prefix_kv(lm.model, torch.tensor([ids], device=lm.device))
    _PREFIX_KV[key] = kv
    while len(_PREFIX_KV) > _PREFIX_KV_SIZE:
        _PREFIX_KV.popitem(last=False)
    return kv


def encode_prepared(lm: LanguageModel, prepared: PreparedBatch, texts: Sequence[str]
                    ) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Token ids to feed, the attention mask and a KV cache for a prepared batch's texts.

    Rows whose branch declares a shared prefix (a category's system prompt and example exchanges)
    start from that prefix's keys and values, computed once and kept, and feed only the rest of
    their text: the rows become [padding][prefix][padding][own tokens], with the padding masked and
    positions following the mask, so every row sees exactly the tokens it would see unshared. A row
    whose text does not split cleanly at the prefix (tokens merging across the boundary) is fed whole.
    """
    flat = [p for branch in (prepared.prefixes or []) for p in branch]
    if not flat or all(p is None for p in flat):
        ids, mask = encode(lm, texts)
        return ids, mask, internals.new_kv_cache(lm.model)
    tok = lm.tokenizer
    prefix_ids: list[list[int]] = []
    own_ids: list[list[int]] = []
    shared: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = []
    for text, messages in zip(texts, flat):
        whole = tok(text, add_special_tokens=False)["input_ids"]
        head = render_prefix(tok, messages) if messages else ""
        if head and text.startswith(head):
            first = tok(head, add_special_tokens=False)["input_ids"]
            if whole[:len(first)] == first and len(first) < len(whole):
                prefix_ids.append(first)
                own_ids.append(whole[len(first):])
                shared.append(_shared_kv(lm, head, first))
                continue
        prefix_ids.append([])
        own_ids.append(whole)
        shared.append(None)
    width_p = max(len(p) for p in prefix_ids)
    width_s = max(len(o) for o in own_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = len(texts)
    ids = torch.full((rows, width_s), pad, dtype=torch.long)
    mask = torch.zeros((rows, width_p + width_s), dtype=torch.long)
    for r, (p, o) in enumerate(zip(prefix_ids, own_ids)):
        ids[r, width_s - len(o):] = torch.tensor(o)
        mask[r, width_p - len(p):width_p] = 1
        mask[r, width_p + width_s - len(o):] = 1
    reference = next(kv for kv in shared if kv is not None)
    layers = []
    for index, (keys, values) in enumerate(reference):
        k = keys.new_zeros((rows, keys.shape[1], width_p, keys.shape[3]))
        v = values.new_zeros((rows, values.shape[1], width_p, values.shape[3]))
        for r, kv in enumerate(shared):
            if kv is not None:
                length = kv[index][0].shape[2]
                k[r, :, width_p - length:] = kv[index][0][0]
                v[r, :, width_p - length:] = kv[index][1][0]
        layers.append((k, v))
    return ids.to(lm.device), mask.to(lm.device), internals.kv_cache_from(lm.model, layers)


def _prepare(lm: LanguageModel, prompts: Sequence[str | Conversation], method: SteeringMethod | None,
             rows: Sequence[RowSteering] | None, answer_prefix: str = "") -> tuple[PreparedBatch, list[str]]:
    conversations = [as_conversation(p) for p in prompts]
    rows = list(rows) if rows is not None else [RowSteering()] * len(conversations)
    if len(rows) != len(conversations):
        raise ValueError(f"{len(rows)} steering rows for {len(conversations)} prompts")
    prepared = (method or Unsteered()).prepare(lm, conversations, rows)
    texts = [render_chat(lm.tokenizer, conv) + answer_prefix for branch in prepared.branches for conv in branch]
    return prepared, texts


@torch.inference_mode()
def generate(
    lm: LanguageModel,
    prompts: Sequence[str | Conversation],
    method: SteeringMethod | None = None,
    rows: Sequence[RowSteering] | None = None,
    config: GenerationConfig | None = None,
    on_step: Callable[[list[int], list[bool]], Sequence[bool] | None] | None = None,
    seeds: Sequence[int | None] | None = None,
) -> list[Generation]:
    """Generate one answer per prompt; `rows` says which user (and α) each prompt is steered for.

    `on_step(tokens, finished)` is called after every step with each row's new token and whether
    the row had already finished before it (for streaming); it may return a mask of rows to stop
    now (a client that left), which end with finish reason "cancelled". `seeds` gives each row its
    own sampling seed, so a seeded row samples the same text whatever shares its batch.
    """
    config = config or GenerationConfig()
    if not prompts:
        return []
    prepared, texts = _prepare(lm, prompts, method, rows)
    batch = len(prompts)
    input_ids, mask, cache = encode_prepared(lm, prepared, texts)
    prompt_lengths = mask[:batch].sum(-1).tolist()
    stops = torch.tensor(stop_token_ids(lm), device=lm.device)
    pad = lm.tokenizer.pad_token_id
    generators: list[torch.Generator | None] | torch.Generator | None = None
    if config.do_sample and seeds is not None:
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds for {batch} prompts")
        generators = [None if s is None else torch.Generator(device=lm.device).manual_seed(s) for s in seeds]
    elif config.do_sample and config.seed is not None:
        generators = torch.Generator(device=lm.device).manual_seed(config.seed)
    processors = config.score_processors()
    done = torch.zeros(batch, dtype=torch.bool, device=lm.device)
    stopped = torch.zeros(batch, dtype=torch.bool, device=lm.device)
    cancelled = torch.zeros(batch, dtype=torch.bool, device=lm.device)
    kept = [config.max_new_tokens] * batch  # tokens a cancelled row keeps (what on_step had seen)
    steps: list[torch.Tensor] = []
    # The attention mask for every step, allocated once: step k uses the first prompt+k+1 columns.
    prompt_width = mask.shape[1]
    mask = torch.cat([mask, mask.new_ones((mask.shape[0], config.max_new_tokens))], dim=-1)
    with prepared.scope():
        logits = internals.forward_step(lm.model, input_ids, mask[:, :prompt_width], cache)
        for step in range(config.max_new_tokens):
            scores = prepared.combine(logits.view(prepared.num_branches, batch, -1))
            history = torch.stack(steps, dim=1) if steps and config.do_sample else input_ids[:batch, :0]
            token = _pick(scores, config, processors, history, generators).masked_fill(done, pad)
            steps.append(token)
            hit = (torch.isin(token, stops) if config.stop_on_eos else torch.zeros_like(done)) & ~done
            if on_step is not None:
                cancel = on_step(token.tolist(), done.tolist())
                if cancel is not None:
                    newly = torch.tensor(list(cancel), dtype=torch.bool, device=lm.device) & ~done & ~hit
                    cancelled |= newly
                    done |= newly
                    for row in newly.nonzero().flatten().tolist():
                        kept[row] = step + 1
            stopped |= hit
            done |= hit
            if bool(done.all()):
                break
            token_in = token.repeat(prepared.num_branches).unsqueeze(-1)
            logits = internals.forward_step(lm.model, token_in, mask[:, :prompt_width + step + 1], cache)
    tokens = torch.stack(steps, dim=1).tolist()
    stop_set = set(stops.tolist())
    results = []
    for row in range(batch):
        ids = []
        for tok in tokens[row][:kept[row]]:
            if tok in stop_set and config.stop_on_eos:
                break
            ids.append(tok)
        results.append(Generation(
            text=lm.tokenizer.decode(ids, skip_special_tokens=True).strip(),
            token_ids=ids,
            prompt_tokens=int(prompt_lengths[row]),
            finish_reason="stop" if bool(stopped[row]) else "cancelled" if bool(cancelled[row]) else "length",
        ))
    return results


def _next_token_logits(lm: LanguageModel, prompts: Sequence[str | Conversation], method: SteeringMethod | None,
                       rows: Sequence[RowSteering] | None, answer_prefix: str) -> tuple[PreparedBatch, torch.Tensor]:
    """The prepared batch and every branch's next-token logits, (branches, batch, vocab)."""
    prepared, texts = _prepare(lm, prompts, method, rows, answer_prefix)
    input_ids, mask, cache = encode_prepared(lm, prepared, texts)
    with prepared.scope():
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
