"""Every cut and splice of the KV cache: encoding rows (with shared prefixes), the running batch's
cache and mask as rows join and leave, and the prefix cache each loaded model keeps.

Rows are left-padded to a common width; padding is masked and positions follow the mask, so each
row attends exactly as it would alone.
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
from steer_away.models import LanguageModel
from steer_away.steering.base import PreparedBatch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values, (batch, kv heads, len, head dim)


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
                ) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Token ids to feed, the attention mask and a KV cache for rows of text.

    Rows with a shared prefix start from that prefix's keys and values, computed once and kept, and
    feed only the rest of their text: the rows become [padding][prefix][padding][own tokens], with
    the padding masked and positions following the mask, so every row sees exactly the tokens it
    would see unshared. A row whose text does not split cleanly at the prefix (tokens merging across
    the boundary) is fed whole.
    """
    if all(p is None for p in prefixes):
        ids, mask = encode(lm, texts)
        return ids, mask, internals.new_kv_cache(lm.model)
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
        ids, mask = encode(lm, texts)
        return ids, mask, internals.new_kv_cache(lm.model)
    return _assemble(lm, rows)


def encode_token_rows(lm: LanguageModel, rows: Sequence[tuple[Conversation | None, list[int]]]
                      ) -> tuple[torch.Tensor, torch.Tensor, object]:
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
              ) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Rows [padding][prefix][padding][own tokens] from (prefix text, prefix ids, own ids): each prefix's
    keys and values from the model's prefix cache, the own tokens left to feed."""
    shared = [prefix_cache(lm).get(lm, head, first) if head else None for head, first, _ in rows]
    width_p = max(len(first) for _, first, _ in rows)
    width_s = max(len(own) for _, _, own in rows)
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width_s), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width_p + width_s), dtype=torch.long)
    for r, (_, p, o) in enumerate(rows):
        ids[r, width_s - len(o):] = torch.tensor(o, dtype=torch.long)
        mask[r, width_p - len(p):width_p] = 1
        mask[r, width_p + width_s - len(o):] = 1
    reference = next((kv for kv in shared if kv is not None), None)
    if reference is None:
        return ids.to(lm.device), mask.to(lm.device), internals.new_kv_cache(lm.model)
    layers = []
    for index, (keys, values) in enumerate(reference):
        k = keys.new_zeros((len(rows), keys.shape[1], width_p, keys.shape[3]))
        v = values.new_zeros((len(rows), values.shape[1], width_p, values.shape[3]))
        for r, kv in enumerate(shared):
            if kv is not None:
                length = kv[index][0].shape[2]
                k[r, :, width_p - length:] = kv[index][0][0]
                v[r, :, width_p - length:] = kv[index][1][0]
        layers.append((k, v))
    return ids.to(lm.device), mask.to(lm.device), internals.kv_cache_from(lm.model, layers)


def encode_prepared(lm: LanguageModel, prepared: PreparedBatch, texts: Sequence[str]
                    ) -> tuple[torch.Tensor, torch.Tensor, object]:
    """`encode_rows` for a prepared batch's texts (branch-major, as `prepared.branches`)."""
    flat = [p for branch in (prepared.prefixes or []) for p in branch] or [None] * len(texts)
    return encode_rows(lm, texts, flat)


def select_rows(lm: LanguageModel, cache: object, index: torch.Tensor, first: int = 0) -> object:
    """A new cache of rows `index` of `cache`, in that order (a row may repeat: several continuations
    of one prompt), from column `first` on."""
    layers = [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:])
              for k, v in internals.kv_layers(cache)]
    return internals.kv_cache_from(lm.model, layers)


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class RunningBatch:
    """The running batch's KV cache and attention mask, (rows, width), rows in the scheduler's order."""

    def __init__(self, lm: LanguageModel, cache: object, mask: torch.Tensor) -> None:
        self.lm, self.cache, self.mask = lm, cache, mask

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def grow(self) -> torch.Tensor:
        """One more column for the token every row is about to feed; returns the new mask."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=-1)
        return self.mask

    def append(self, cache: object, mask: torch.Tensor) -> None:
        """Rows that were just prefilled join below the running ones (both left-padded to one width)."""
        width = max(self.width, mask.shape[1])
        layers = [(torch.cat([_pad_left(k0, width, 2), _pad_left(k1, width, 2)]),
                   torch.cat([_pad_left(v0, width, 2), _pad_left(v1, width, 2)]))
                  for (k0, v0), (k1, v1) in zip(internals.kv_layers(self.cache), internals.kv_layers(cache))]
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
        self.cache = internals.kv_cache_from(self.lm.model, layers)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), and drop columns that are padding for all of them."""
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        first = int((mask.sum(0) > 0).nonzero()[0])
        self.mask = mask[:, first:]
        self.cache = select_rows(self.lm, self.cache, index, first)
