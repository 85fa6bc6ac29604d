"""Buffers for KV caches, handed out again once a cache is done with them (on a CPU).

A fresh buffer's pages are paid for as they are first touched: on our 2-core machine 5.5 GB/s,
against 17 GB/s to overwrite memory already touched, and zeroing the two fresh caches of one
generate call of 16 EADS requests (1.2 GB) took 0.9 s of its 9.8 s. Every generate call, sweep
batch and prefill needs caches about as large as the last one's, so a freed buffer is kept and
handed to the next request that fits in it. A GPU's caching allocator does this already: there the
pool only passes allocations through.

Buffers come back uninitialised: a cache writes, or zeroes, every column it reads.
"""

from __future__ import annotations

import threading
from collections import deque

import torch

KEEP_BYTES = 4 * 2**30  # free buffers kept at most (the largest are dropped first beyond it)
OVERSIZE = 2  # a buffer more than this many times the size asked for is left for a larger cache


class BufferPool:
    """Flat buffers, by dtype and device; safe to use from several threads."""

    def __init__(self, keep_bytes: int = KEEP_BYTES) -> None:
        self.keep_bytes = keep_bytes
        self._free: list[torch.Tensor] = []  # sorted by size
        # Buffers come back from finalizers, which the garbage collector may run inside `take` itself,
        # in the same thread: they go into a queue that needs no lock, and `take` files them.
        self._returned: deque[torch.Tensor] = deque()
        self._lock = threading.Lock()
        self.reused = 0  # buffers handed out again, and ...
        self.allocated = 0  # ... allocated afresh

    def take(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A flat buffer of at least `numel` elements (its contents undefined)."""
        if device.type == "cpu":
            with self._lock:
                self._file()
                for i, buffer in enumerate(self._free):  # sorted by size: the first that fits is the smallest
                    if buffer.dtype == dtype and buffer.device == device and numel <= buffer.numel() <= OVERSIZE * numel:
                        self.reused += 1
                        return self._free.pop(i)
        self.allocated += 1
        return torch.empty(numel, dtype=dtype, device=device)

    def give(self, buffer: torch.Tensor) -> None:
        """Hand a buffer back: nothing may use it, or a view of it, any more."""
        if buffer.device.type == "cpu":
            self._returned.append(buffer)  # no lock: see __init__

    def _file(self) -> None:
        """Sort the buffers given back into the free list, keeping at most `keep_bytes` (under the lock)."""
        if not self._returned:
            return
        while self._returned:
            self._free.append(self._returned.popleft())
        self._free.sort(key=torch.Tensor.numel)
        while sum(b.numel() * b.element_size() for b in self._free) > self.keep_bytes:
            self._free.pop()

    def free(self) -> list[torch.Tensor]:
        """The buffers kept now, smallest first."""
        with self._lock:
            self._file()
            return list(self._free)

    def clear(self) -> None:
        with self._lock:
            self._returned.clear()
            self._free.clear()


POOL = BufferPool()
