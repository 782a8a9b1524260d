"""A consistent-hash ring over worker ids, with stable hashes that agree across processes and replicas."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence
from struct import Struct

__all__ = ["HashRing", "RingCache", "stable_hash", "token_bytes"]

VIRTUAL_NODES = 150
_U32 = Struct("<I")


def stable_hash(data: bytes) -> int:
    """64-bit blake2b: never Python's ``hash()``, which is salted per process."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def token_bytes(token_ids: Sequence[int]) -> bytes:
    """Token ids as little-endian u32s, the same bytes on every platform."""
    return b"".join(_U32.pack(t) for t in token_ids)


class HashRing:
    """``VIRTUAL_NODES`` points per worker id; a key belongs to the first point at or after its hash.

    A point's position depends only on its worker's id, so adding or removing one worker moves only
    the keys that land on (or leave) that worker's points.
    """

    def __init__(self, ids: Sequence[str], virtual_nodes: int = VIRTUAL_NODES) -> None:
        points = sorted(
            (stable_hash(f"{wid}#{v}".encode()), i) for i, wid in enumerate(ids) for v in range(virtual_nodes)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [i for _, i in points]
        self._size = len(ids)

    def walk(self, key_hash: int) -> Iterator[int]:
        """Indices (into the ids the ring was built from) in ring order from ``key_hash``, each once."""
        if not self._hashes:
            return
        start = bisect.bisect_left(self._hashes, key_hash)
        seen: set[int] = set()
        n = len(self._hashes)
        for step in range(n):
            owner = self._owners[(start + step) % n]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == self._size:
                    return

    def owner(self, key_hash: int) -> int:
        """The index that owns ``key_hash``."""
        return next(self.walk(key_hash))


class RingCache:
    """One ring per model, rebuilt only when that model's candidate ids change."""

    def __init__(self) -> None:
        self._rings: dict[str, tuple[tuple[str, ...], HashRing]] = {}

    def ring(self, model_id: str, ids: tuple[str, ...]) -> HashRing:
        cached = self._rings.get(model_id)
        if cached is not None and cached[0] == ids:
            return cached[1]
        ring = HashRing(ids)
        self._rings[model_id] = (ids, ring)
        return ring
