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

import torch

KEEP_BYTES = 4 * 2**30  # free buffers kept at most (the largest are dropped first beyond it)


class BufferPool:
    """Flat buffers, by dtype and device; safe to use from several threads."""

    def __init__(self, keep_bytes: int = KEEP_BYTES) -> None:
        self.keep_bytes = keep_bytes
        self._free: list[torch.Tensor] = []
        self._lock = threading.Lock()
        self.reused = 0  # buffers handed out again, and ...
        self.allocated = 0  # ... allocated afresh

    def take(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A flat buffer of at least `numel` elements (its contents undefined)."""
        if device.type == "cpu":
            with self._lock:
                for i, buffer in enumerate(self._free):  # sorted by size: the first that fits is the smallest
                    if buffer.dtype == dtype and buffer.device == device and buffer.numel() >= numel:
                        self.reused += 1
                        return self._free.pop(i)
        self.allocated += 1
        return torch.empty(numel, dtype=dtype, device=device)

    def give(self, buffer: torch.Tensor) -> None:
        """Hand a buffer back: nothing may use it, or a view of it, any more."""
        if buffer.device.type != "cpu":
            return
        with self._lock:
            self._free.append(buffer)
            self._free.sort(key=torch.Tensor.numel)
            while sum(b.numel() * b.element_size() for b in self._free) > self.keep_bytes:
                self._free.pop()

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


POOL = BufferPool()
