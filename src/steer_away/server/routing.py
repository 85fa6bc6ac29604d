"""Which replica answers a user: consistent hashing, so a user's vector and their category's prefix
stay warm on one replica, with spill-over to the next one on the ring when theirs is full or down.

Model-free and Ray-free: the ingress of `steer-away serve --replicas N` (server/replicas.py) keeps
the in-flight counts and down marks, this module only decides.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence


def _point(text: str) -> int:
    """A position on the ring, the same in every process (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class UserRing:
    """Replicas placed on a hash ring at `points` positions each: a user belongs to the first replica
    clockwise of their own position. Adding or removing one replica moves only about 1/N of the users."""

    def __init__(self, replicas: int, points: int = 64) -> None:
        if replicas < 1:
            raise ValueError(f"a ring needs at least one replica, got {replicas}")
        marks = sorted((_point(f"replica-{r}#{i}"), r) for r in range(replicas) for i in range(points))
        self.replicas = replicas
        self._positions = [p for p, _ in marks]
        self._owners = [r for _, r in marks]

    def order(self, user: str) -> list[int]:
        """Every replica, the user's own first, then as met going round the ring (the spill-over order)."""
        start = bisect.bisect(self._positions, _point(user)) % len(self._positions)
        seen: list[int] = []
        for i in range(len(self._owners)):
            owner = self._owners[(start + i) % len(self._owners)]
            if owner not in seen:
                seen.append(owner)
                if len(seen) == self.replicas:
                    break
        return seen


def choose(order: Sequence[int], in_flight: Sequence[int], capacity: int, down: set[int]) -> int | None:
    """The first replica in `order` that is up and has room; if every one that is up is full, the least
    loaded of them (its queue absorbs the burst, or answers 429); None when all are down."""
    up = [r for r in order if r not in down]
    for replica in up:
        if in_flight[replica] < capacity:
            return replica
    return min(up, key=lambda r: in_flight[r], default=None)
