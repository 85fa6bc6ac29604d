"""Rows of the KV cache: encoding rows (with shared prefixes), the running batch's rows as requests
join and leave, and the prefix cache each loaded model keeps.

Rows are left-padded to a common width; padding is masked and positions follow the mask, so each
row attends exactly as it would alone. The cache itself (`internals.BatchCache`) is written in
place: a decoding step writes one column, a joiner's rows are copied in once, and a leaver's slots
are refilled by the last rows, so no row is copied because another joined or left.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from steer_away import internals
from steer_away.chat import Conversation, encode, render_prefix
from steer_away.decoding.request import DecodeRequest
from steer_away.internals import KV, BatchCache
from steer_away.models import LanguageModel
from steer_away.steering.framework.method import PreparedBatch


class PrefixCache:
    """Keys and values of shared prefixes (a category's system prompt and example exchanges) for one
    model, least recently used first out; safe to use from several threads."""

    def __init__(self, size: int = 16) -> None:  # 16 prefixes: a few MiB each on the embedded model
        self.size = size
        self._kv: OrderedDict[str, KV] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, lm: LanguageModel, text: str, ids: list[int]) -> KV:
        with self._lock:
            if text in self._kv:
                self._kv.move_to_end(text)
                return self._kv[text]
            kv = internals.prefix_kv(lm.model, torch.tensor([ids], device=lm.device))
            self._kv[text] = kv
            while len(self._kv) > self.size:
                self._kv.popitem(last=False)
            return kv


_PREFIX_CACHES: weakref.WeakKeyDictionary[Any, PrefixCache] = weakref.WeakKeyDictionary()
_PREFIX_CACHES_LOCK = threading.Lock()


def prefix_cache(lm: LanguageModel) -> PrefixCache:
    """The model's own prefix cache: created with its first use, gone with the model."""
    with _PREFIX_CACHES_LOCK:
        if lm.model not in _PREFIX_CACHES:
            _PREFIX_CACHES[lm.model] = PrefixCache()
        return _PREFIX_CACHES[lm.model]


def encode_rows(lm: LanguageModel, texts: Sequence[str], prefixes: Sequence[Conversation | None]
                ) -> tuple[torch.Tensor, torch.Tensor, BatchCache]:
    """Token ids to feed, the attention mask and a KV cache for rows of text.

    Rows with a shared prefix start from that prefix's keys and values, computed once and kept, and
    feed only the rest of their text: the rows become [padding][prefix][padding][own tokens], with
    the padding masked and positions following the mask, so every row sees exactly the tokens it
    would see unshared. A row whose text does not split cleanly at the prefix (tokens merging across
    the boundary) is fed whole. The cache holds the prefixes and the whole mask, with room for the rest.
    """
    if all(p is None for p in prefixes):
        return _unshared(lm, texts)
    tok = lm.tokenizer
    rows: list[tuple[str, list[int], list[int]]] = []  # (prefix text, its ids, the row's own ids)
    for text, messages in zip(texts, prefixes):
        whole = tok(text, add_special_tokens=False)["input_ids"]
        head = render_prefix(tok, messages) if messages else ""
        if head and text.startswith(head):
            first = tok(head, add_special_tokens=False)["input_ids"]
            if whole[:len(first)] == first and len(first) < len(whole):
                rows.append((head, first, whole[len(first):]))
                continue
        rows.append(("", [], whole))
    if not any(head for head, _, _ in rows):
        return _unshared(lm, texts)
    return _assemble(lm, rows)


def _unshared(lm: LanguageModel, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, BatchCache]:
    ids, mask = encode(lm, texts)
    cache = internals.new_kv_cache(lm.model, capacity=mask.shape[1])
    cache.set_mask(mask)
    return ids, mask, cache


def encode_token_rows(lm: LanguageModel, rows: Sequence[tuple[Conversation | None, list[int]]]
                      ) -> tuple[torch.Tensor, torch.Tensor, BatchCache]:
    """`encode_rows` for rows given as token ids after optional leading messages (rendered through the
    chat template, their keys and values shared and kept as for text rows): lm-evaluation-harness's
    plain-text contexts behind a method's system prompt."""
    memo: dict[str, tuple[str, list[int]]] = {}
    return _assemble(lm, [(*head_tokens(lm, messages, memo), list(own)) for messages, own in rows])


def head_tokens(lm: LanguageModel, messages: Conversation | None,
                memo: dict[str, tuple[str, list[int]]]) -> tuple[str, list[int]]:
    """Leading messages as rendered text and its token ids ("" and [] for none). Rows of a batch share a
    few heads: `memo` (one per batch) tokenises each once."""
    if not messages:
        return "", []
    head = render_prefix(lm.tokenizer, messages)
    if head not in memo:
        memo[head] = (head, lm.tokenizer(head, add_special_tokens=False)["input_ids"])
    return memo[head]


def _assemble(lm: LanguageModel, rows: Sequence[tuple[str, list[int], list[int]]]
              ) -> tuple[torch.Tensor, torch.Tensor, BatchCache]:
    """Rows [padding][prefix][padding][own tokens] from (prefix text, prefix ids, own ids): each prefix's
    keys and values from the model's prefix cache, copied once into the rows it starts, the own
    tokens left to feed."""
    width_p = max(len(first) for _, first, _ in rows)
    width_s = max(len(own) for _, _, own in rows)
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width_s), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width_p + width_s), dtype=torch.long)
    starts: dict[tuple[str, int], list[int]] = {}  # (prefix, its first column) -> rows it starts
    for r, (head, p, o) in enumerate(rows):
        ids[r, width_s - len(o):] = torch.tensor(o, dtype=torch.long)
        mask[r, width_p - len(p):width_p] = 1
        mask[r, width_p + width_s - len(o):] = 1
        if head:
            starts.setdefault((head, width_p - len(p)), []).append(r)
    cache = internals.new_kv_cache(lm.model, capacity=width_p + width_s)
    cache.set_mask(mask.to(lm.device))
    firsts = {head: first for head, first, _ in rows if head}
    if starts:  # else every row is fed whole
        cache.put_prefixes(width_p, [(members, column, prefix_cache(lm).get(lm, head, firsts[head]))
                                     for (head, column), members in starts.items()])
    return ids.to(lm.device), mask.to(lm.device), cache


def encode_prepared(lm: LanguageModel, prepared: PreparedBatch, texts: Sequence[str]
                    ) -> tuple[torch.Tensor, torch.Tensor, BatchCache]:
    """`encode_rows` for a prepared batch's texts (branch-major, as `prepared.branches`)."""
    flat = [p for branch in (prepared.prefixes or []) for p in branch] or [None] * len(texts)
    return encode_rows(lm, texts, flat)


Owner = tuple[DecodeRequest, int]  # (request, branch): whose row a slot holds


class RunningBatch:
    """The running requests' rows: one slot of a `BatchCache` per branch of each request.

    `owners[slot]` says whose row a slot holds; `slots[request]` lists a request's slots in branch
    order (not necessarily adjacent: a leaver's slots are refilled by the last rows). `version`
    changes whenever rows join or leave."""

    def __init__(self, lm: LanguageModel) -> None:
        self.cache = internals.new_kv_cache(lm.model)
        self.owners: list[Owner] = []
        self.slots: dict[DecodeRequest, list[int]] = {}
        self.version = 0

    @property
    def rows(self) -> int:
        return self.cache.rows

    @property
    def width(self) -> int:
        return self.cache.width

    @property
    def mask(self) -> torch.Tensor:
        return self.cache.mask()

    def __contains__(self, request: DecodeRequest) -> bool:
        return request in self.slots

    def grow(self) -> torch.Tensor:
        """The mask for a step feeding every row one token (its column attended)."""
        return self.cache.attention_mask(1)

    def join(self, source: BatchCache, rows: Sequence[int], owners: Sequence[Owner]) -> None:
        """Rows `rows` of a prefilled cache join as `owners` (a source row may serve several owners)."""
        first = self.cache.rows
        self.cache.append(source, rows)
        for offset, owner in enumerate(owners):
            self.owners.append(owner)
            request, branch = owner
            slots = self.slots.setdefault(request, [])
            slots += [-1] * (branch + 1 - len(slots))
            slots[branch] = first + offset
        self.version += 1

    def leave(self, requests: Sequence[DecodeRequest]) -> None:
        """These requests' rows leave; the last rows move into their slots."""
        freed = [slot for request in requests for slot in self.slots.pop(request, [])]
        if not freed:
            return
        for source, target in self.cache.remove(freed):
            owner = self.owners[source]
            self.owners[target] = owner
            self.slots[owner[0]][owner[1]] = target
        del self.owners[self.cache.rows:]
        self.version += 1
