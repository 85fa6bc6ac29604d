"""KV caches: `BatchCache`, the one cache steer-away runs models with, and a shared prefix's keys and values.

transformers' `DynamicCache` grows by concatenation, so every decoding step copies every row's whole
cache; with the long shared prefixes of EADS / ACD branches that copy was over a third of a step.
`BatchCache` is a transformers `Cache` (the model's attention layers and our fast decode step write
into it through `update`) whose keys and values live in buffers written in place:

- columns `[start, end)` of rows `[0, rows)` are live; each row's tokens are right-aligned at `end`
  behind masked padding, the layout left padding gives, and the cache keeps every row's attention
  mask in the same columns, so a decoding step writes one column and attends over a view;
- the buffers grow by chunks of columns (the window moved back to the left then, with room on both
  sides), never per token, and come from a pool that hands out again what finished caches gave back
  (`buffers.py`);
- rows join below the others (`append`: only their keys are copied) and leave by having the last
  rows moved into their slots (`remove`: only the moved rows are copied); the others are copied only
  when the buffers grow, or when a joiner is wider than the room left of the window.

Every column of the live window is written or zeroed before it is read (masked padding included:
attention multiplies it by zero, which a NaN left by an earlier cache would survive).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from steer_away.internals.architecture import Model, num_layers
from steer_away.internals.buffers import POOL
from steer_away.internals.shared_prefix import KV, PrefixPlan, SharedPrefix, prefix_plan

GROW_COLUMNS = 64  # the fewest columns a buffer grows by; it grows by half its live width when that is more


class _Layer(CacheLayerMixin):
    """One layer's view of its `BatchCache`: transformers calls `update` once per forward pass."""

    is_sliding = False

    def __init__(self, owner: BatchCache, index: int) -> None:
        super().__init__()
        # weak: no cycle between a cache and its layers, so a cache dies (and gives its buffer back) at once
        self._owner = weakref.ref(owner)
        self.index = index
        self.end = 0  # this layer's next column: ahead of the others while a forward pass runs

    @property
    def owner(self) -> BatchCache:
        owner = self._owner()
        assert owner is not None, "a layer of a cache that is gone"
        return owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.owner._allocate(key_states, rows=key_states.shape[0], columns=key_states.shape[2])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.owner._write(self, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.end - self.owner.start + query_length, 0

    def get_seq_length(self) -> int:
        return self.end - self.owner.start

    def get_max_length(self) -> int:
        return -1


class BatchCache(Cache):
    """Keys, values and attention mask of a batch of rows, in buffers written in place (see the module
    note). `rows`, `start` and `end` say what is live; `attention_mask(new)` gives a pass's mask."""

    def __init__(self, depth: int, capacity: int = 0) -> None:
        self._depth = depth
        self._layers = [_Layer(self, index) for index in range(depth)]
        super().__init__(layers=list(self._layers))
        self.capacity_hint = capacity  # columns to allocate on the first write, when it is known
        self.rows = 0
        self.start = 0
        self._keys: list[torch.Tensor] = []  # per layer (row capacity, kv heads, column capacity, head dim) ...
        self._values: list[torch.Tensor] = []  # ... views of one pooled buffer
        self._release: weakref.finalize | None = None  # gives the buffer back to the pool
        self._mask: torch.Tensor | None = None  # (row capacity, column capacity), 1 where a row attends
        self._prefixes: list[tuple[SharedPrefix, int] | None] = []  # per row: the shared prefix it starts with, its end
        self._plan: tuple[int, PrefixPlan | None] | None = None  # (layout it was made for, the plan)
        self._layout = 0  # changes whenever rows or columns move

    # -- what is live --

    @property
    def end(self) -> int:
        return self._layers[0].end

    @property
    def width(self) -> int:
        return self.end - self.start

    @property
    def allocated(self) -> bool:
        return bool(self._keys)

    def keys_values(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's live keys and values, (rows, kv heads, width, head dim): views, valid while the
        cache lives (its buffer then goes back to the pool)."""
        return [(k[:self.rows, :, self.start:self.end], v[:self.rows, :, self.start:self.end])
                for k, v in zip(self._keys, self._values)]

    def mask(self) -> torch.Tensor:
        """The live rows' attention mask, (rows, width)."""
        assert self._mask is not None, "an empty cache has no mask"
        return self._mask[:self.rows, self.start:self.end]

    def prefix_plan(self) -> PrefixPlan | None:
        """How a decode step can read each shared prefix once (None: no row starts with one)."""
        if self._plan is None or self._plan[0] != self._layout:
            plan = prefix_plan(self._prefixes, self.mask(), self.start) if self.rows and any(self._prefixes) else None
            self._plan = (self._layout, plan)
        return self._plan[1]

    @torch.inference_mode()
    def attention_mask(self, new: int, attend: bool = True) -> torch.Tensor:
        """The mask for a pass feeding `new` tokens to every row: the live columns and `new` more, which
        are marked attended when `attend` (decoding) or keep what `set_mask` wrote (a prefill's padding)."""
        assert self._mask is not None
        if self.end + new > self._mask.shape[1]:  # full: the window moves left, into buffers with room to grow
            room = max(GROW_COLUMNS, self.width // 2)  # to the right for new tokens, to the left for wider joiners
            self._relayout(self._mask.shape[0], room + self.width + new + room, room - self.start)
        if attend:
            self._mask[:self.rows, self.end:self.end + new] = 1
        return self._mask[:self.rows, self.start:self.end + new]

    @torch.inference_mode()
    def set_mask(self, mask: torch.Tensor) -> None:
        """The whole mask of rows about to be fed from an empty or prefix-only cache, (rows, columns):
        its first `width` columns describe what is cached, the rest the tokens still to feed."""
        if self._mask is None:  # nothing cached yet: the keys' shape is learnt from the first write
            self._mask = torch.zeros((mask.shape[0], max(self.capacity_hint, mask.shape[1])), dtype=torch.long,
                                     device=mask.device)
        self.rows = mask.shape[0]
        self._mask[:self.rows].zero_()
        self._mask[:self.rows, self.start:self.start + mask.shape[1]] = mask
        self._prefixes = [None] * self.rows
        self._layout += 1

    # -- filling --

    @classmethod
    @torch.inference_mode()
    def holding(cls, layers: KV, mask: torch.Tensor, capacity: int = 0,
                prefixes: Sequence[tuple[SharedPrefix, int] | None] | None = None) -> BatchCache:
        """A cache holding these per-layer keys and values, (rows, kv heads, width, head dim), whose rows
        attend as `mask` (rows, width or more: columns past the keys describe tokens still to feed) and
        start with `prefixes` (per row, or None)."""
        cache = cls(len(layers), capacity=max(capacity, mask.shape[1]))
        cache.set_mask(mask)
        if prefixes is not None:
            cache._prefixes = list(prefixes)
        width = layers[0][0].shape[2]
        cache._allocate(layers[0][0], rows=cache.rows, columns=cache.capacity_hint)
        for i, (k, v) in enumerate(layers):
            cache._keys[i][:cache.rows, :, :width] = k
            cache._values[i][:cache.rows, :, :width] = v
        cache._set_end(width)
        return cache

    @torch.inference_mode()
    def put_prefixes(self, width: int, prefixes: Sequence[tuple[Sequence[int], int, KV]]) -> None:
        """Start rows from shared prefixes: each (rows, first column, that prefix's per-layer keys and
        values of one sequence) is copied into its rows; every other column before `width` is zeroed.
        After `set_mask`, before the first pass."""
        like = prefixes[0][2][0][0]
        self._allocate(like, rows=self.rows, columns=max(self.capacity_hint, width))
        for k, v in zip(self._keys, self._values):
            k[:self.rows, :, :width].zero_()
            v[:self.rows, :, :width].zero_()
        for rows, column, layers in prefixes:
            index = torch.tensor(list(rows), device=like.device)
            shared = SharedPrefix(layers)
            for i, (k, v) in enumerate(layers):
                length = k.shape[2]
                self._keys[i][index, :, column:column + length] = k[0]
                self._values[i][index, :, column:column + length] = v[0]
            for row in rows:
                self._prefixes[row] = (shared, column + length)
        self._set_end(width)
        self._layout += 1

    def _write(self, layer: _Layer, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._keys:
            columns = self._mask.shape[1] if self._mask is not None else keys.shape[2]
            self._allocate(keys, rows=keys.shape[0], columns=max(self.capacity_hint, columns))
        if self.rows == 0:
            self.rows = keys.shape[0]
            self._prefixes = [None] * self.rows
        assert keys.shape[0] == self.rows, f"a pass over {keys.shape[0]} rows of a cache of {self.rows}"
        new = keys.shape[2]
        if layer.index == 0 and layer.end + new > self._keys[0].shape[2]:  # a pass longer than the room left
            self._relayout(self._keys[0].shape[0], layer.end + new + max(GROW_COLUMNS, self.width // 2), 0)
        k, v = self._keys[layer.index], self._values[layer.index]
        k[:self.rows, :, layer.end:layer.end + new] = keys
        v[:self.rows, :, layer.end:layer.end + new] = values
        layer.end += new
        return k[:self.rows, :, self.start:layer.end], v[:self.rows, :, self.start:layer.end]

    # -- rows joining and leaving (between passes) --

    @torch.inference_mode()
    def append(self, other: BatchCache, rows: Sequence[int]) -> None:
        """Copy rows `rows` of `other` (a row may repeat: one prefill serving several identical rows) in
        below the live rows, right-aligned at this cache's `end`."""
        assert other.allocated, "rows join once they are prefilled"
        count, width = len(rows), other.width
        if not self._keys:
            self._allocate(other._keys[0], rows=count, columns=width + GROW_COLUMNS)
        if self.rows == 0:  # nothing live: start afresh at the left
            self.start = 0
            self._set_end(width)
        self._ensure_room(count, width)
        assert self._mask is not None and other._mask is not None
        end, first = self.end, self.end - width
        start = min(self.start, first) if self.rows else first
        index = torch.tensor(list(rows), device=other._keys[0].device)
        slots = slice(self.rows, self.rows + count)
        for mine, theirs in ((self._keys, other._keys), (self._values, other._values)):
            for ours, source in zip(mine, theirs):
                ours[slots, :, first:end] = source[:, :, other.start:other.end].index_select(0, index)
                ours[slots, :, start:first].zero_()  # the joiners' padding, narrower than the window
                ours[:self.rows, :, start:self.start].zero_()  # the others' new padding, wider joiners
        self._mask[slots].zero_()
        self._mask[slots, first:end] = other._mask[:, other.start:other.end].index_select(0, index)
        self._mask[:self.rows, start:self.start] = 0
        for row in rows:
            entry = other._prefixes[row]
            self._prefixes.append(None if entry is None else (entry[0], entry[1] - other.start + first))
        self.start = start
        self.rows += count
        self._layout += 1

    @torch.inference_mode()
    def remove(self, slots: Sequence[int]) -> list[tuple[int, int]]:
        """Free these rows: the last live rows move into the freed slots below the new row count. Returns
        the moves, (from, to); then drops columns that no remaining row attends."""
        leaving = set(slots)
        kept = self.rows - len(leaving)
        holes = sorted(s for s in leaving if s < kept)
        movers = [s for s in range(kept, self.rows) if s not in leaving]
        moves = list(zip(movers, holes))
        if moves and self._mask is not None:
            source = torch.tensor(movers, device=self._mask.device)
            target = torch.tensor(holes, device=self._mask.device)
            for buffer in (*self._keys, *self._values):
                window = buffer[:, :, self.start:self.end]  # what is read of a row (the rest is rewritten first)
                window.index_copy_(0, target, window.index_select(0, source))
            self._mask.index_copy_(0, target, self._mask.index_select(0, source))
        for source_row, target_row in moves:
            self._prefixes[target_row] = self._prefixes[source_row]
        del self._prefixes[kept:]
        self.rows = kept
        self._trim()
        self._layout += 1
        return moves

    @torch.inference_mode()
    def take(self, rows: Sequence[int], extra: int = 0) -> BatchCache:
        """A new cache of these rows (a row may repeat), with room for `extra` more columns, whose mask
        over them is this cache's (what a prefill group wrote for the tokens it has yet to feed)."""
        assert self._mask is not None
        index = torch.tensor(list(rows), device=self._mask.device)
        columns = self.width + extra
        mask = self._mask.new_zeros((len(rows), columns))
        available = min(columns, self._mask.shape[1] - self.start)
        mask[:, :available] = self._mask.index_select(0, index)[:, self.start:self.start + available]
        if not self._keys:  # nothing written yet: only the mask to carry
            cache = BatchCache(self._depth, capacity=columns)
            cache.set_mask(mask)
            return cache
        layers = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.keys_values()]
        prefixes = [None if (entry := self._prefixes[row]) is None else (entry[0], entry[1] - self.start) for row in rows]
        return BatchCache.holding(layers, mask, capacity=columns, prefixes=prefixes)

    def _trim(self) -> None:
        """Move `start` past the columns that are padding for every live row."""
        if self.rows == 0 or self._mask is None:
            self.start = self.end
            return
        attended = self._mask[:self.rows, self.start:self.end].any(0).nonzero()
        if attended.numel():
            self.start += int(attended[0])

    # -- buffers --

    def _set_end(self, end: int) -> None:
        for layer in self._layers:
            layer.end = end

    def _allocate(self, like: torch.Tensor, rows: int, columns: int) -> None:
        """Buffers for keys and values shaped like `like` (and at least the mask's size), from the pool."""
        if self._mask is not None:
            rows, columns = max(rows, self._mask.shape[0]), max(columns, self._mask.shape[1])
        self._take_buffers(like, rows, columns)
        if self._mask is None or self._mask.shape != (rows, columns):
            mask = torch.zeros((rows, columns), dtype=torch.long, device=like.device)
            if self._mask is not None:
                mask[:self._mask.shape[0], :self._mask.shape[1]] = self._mask
            self._mask = mask
        for layer in self._layers:
            layer.is_initialized = True

    def _take_buffers(self, like: torch.Tensor, rows: int, columns: int) -> None:
        """New (uninitialised) buffers of this size; the old ones, if any, go back to the pool after."""
        shape = (rows, like.shape[1], columns, like.shape[3])
        size = rows * like.shape[1] * columns * like.shape[3]
        with torch.inference_mode():
            flat = POOL.take(2 * self._depth * size, like.dtype, like.device)
        views = [flat[i * size:(i + 1) * size].view(shape) for i in range(2 * self._depth)]
        self._keys, self._values = views[:self._depth], views[self._depth:]
        self._release = weakref.finalize(self, POOL.give, flat)

    def _ensure_room(self, rows: int, width: int) -> None:
        """Room for `rows` more rows of `width` columns right-aligned at `end` (moving the window right
        when they are wider than the columns before it)."""
        assert self._mask is not None
        shift = max(0, width - self.end)
        row_capacity = self._mask.shape[0]
        if self.rows + rows > row_capacity:
            row_capacity = max(self.rows + rows, 2 * row_capacity)
        columns = self._mask.shape[1]
        if self.end + shift >= columns:
            columns = self.end + shift + max(GROW_COLUMNS, width // 2)
        if shift or row_capacity > self._mask.shape[0] or columns > self._mask.shape[1]:
            self._relayout(row_capacity, columns, shift)

    def _relayout(self, row_capacity: int, columns: int, shift: int) -> None:
        """New buffers of this size, the live window copied `shift` columns over (the only copy of rows
        that stay; it happens once per chunk of columns, or when rows outgrow the buffers)."""
        assert self._mask is not None
        start, end, rows = self.start, self.end, self.rows
        old_keys, old_values, old_release = self._keys, self._values, self._release
        if old_keys:
            self._take_buffers(old_keys[0], row_capacity, columns)
        if rows:
            for new, old in zip((*self._keys, *self._values), (*old_keys, *old_values)):
                new[:rows, :, start + shift:end + shift] = old[:rows, :, start:end]
        if old_release is not None:
            old_release()  # the old buffer is not read again: back to the pool
        mask = self._mask.new_zeros((row_capacity, columns))
        if rows:  # up to the old capacity: a prefill cache's mask also covers the tokens it has yet to feed
            kept = min(self._mask.shape[1], columns - shift) - start
            mask[:rows, start + shift:start + shift + kept] = self._mask[:rows, start:start + kept]
        self._mask = mask
        self.start = start + shift
        self._set_end(end + shift)
        self._prefixes = [None if entry is None else (entry[0], entry[1] + shift) for entry in self._prefixes]
        self._layout += 1


def new_kv_cache(model: Model, capacity: int = 0) -> BatchCache:
    """An empty cache for `model`; `capacity`: the columns its first pass will need, when known."""
    return BatchCache(num_layers(model), capacity)


@torch.inference_mode()
def prefix_kv(model: Model, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's keys and values for one unpadded token sequence (1, len), to reuse as a shared prefix
    (copies: the cache they were computed in goes back to the pool)."""
    cache = new_kv_cache(model, capacity=input_ids.shape[1])
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
    model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), position_ids=positions,
          cache=cache, use_cache=True, logits_to_keep=1)
    return [(k.clone(), v.clone()) for k, v in cache.keys_values()]
