"""Hash-ring policies: ``consistent_hashing`` (routing key / pinned worker) and ``prefix_hash``."""

from __future__ import annotations

import random
from collections.abc import Sequence

from dataplane.config import PolicyConfig
from dataplane.routing.base import KvEventSink, RouteRequest
from dataplane.routing.candidates import worker_id
from dataplane.routing.ring import RingCache, stable_hash, token_bytes
from dataplane.workers import Worker

__all__ = ["ConsistentHashing", "PrefixHash"]

_CHARS_PER_TOKEN = 4  # text-only requests hash about as much text as prefix_token_count tokens


class ConsistentHashing:
    """``X-SMG-Target-Worker`` pins an index; ``X-SMG-Routing-Key`` goes to its ring owner; else random."""

    name = "consistent_hashing"
    needs_loads = False
    kv_events: KvEventSink | None = None

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._rings = RingCache()

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        if request.target_worker is not None:
            return _pinned(request.target_worker, workers)
        if request.routing_key is None:
            return workers[self._rng.randrange(len(workers))]
        ring = self._rings.ring(request.model_id, tuple(worker_id(w) for w in workers))
        return workers[ring.owner(stable_hash(request.routing_key.encode()))]

    def maintain(self, now: float) -> None:
        pass


class PrefixHash:
    """The ring owner of the prompt's first ``prefix_token_count`` tokens, unless it is overloaded.

    Overloaded means ``load > average × prefix_hash_load_factor``; the request then walks the ring to the
    next worker within that bound, so a hot prefix spills to the same second worker (which then caches
    it too) rather than scattering.
    """

    name = "prefix_hash"
    needs_loads = False
    kv_events: KvEventSink | None = None

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self._config = config or PolicyConfig()
        self._rings = RingCache()

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        n = self._config.prefix_token_count
        if request.token_ids is not None:
            key = token_bytes(request.token_ids[:n])
        else:
            key = request.text[: n * _CHARS_PER_TOKEN].encode()
        ring = self._rings.ring(request.model_id, tuple(worker_id(w) for w in workers))
        bound = sum(w.load for w in workers) / len(workers) * self._config.prefix_hash_load_factor
        for i in ring.walk(stable_hash(key)):
            if workers[i].load <= bound:
                return workers[i]
        return min(workers, key=lambda w: w.load)  # only with a load factor below 1

    def maintain(self, now: float) -> None:
        pass


def _pinned(target: str, workers: Sequence[Worker]) -> Worker | None:
    try:
        index = int(target)
    except ValueError:
        return None
    return workers[index] if 0 <= index < len(workers) else None
