"""``manual``: sticky routing keys, each owned by one worker until that worker stops being a candidate."""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import assert_never

from dataplane.config import PolicyConfig
from dataplane.routing.base import KvEventSink, RouteRequest
from dataplane.routing.candidates import least_loaded, worker_id
from dataplane.workers import Worker

__all__ = ["MAX_KEYS", "Manual"]

MAX_KEYS = 1_000_000  # beyond this the least recently used key is dropped (it will be re-assigned)


class Manual:
    """Routing key → worker id, kept until the worker leaves the candidates or the key idles out.

    New keys (and requests without a key) are placed by ``assignment_mode``: ``random``, ``min_load``
    (fewest requests in flight) or ``min_group`` (fewest keys assigned).
    """

    name = "manual"
    needs_loads = False
    kv_events: KvEventSink | None = None

    def __init__(
        self,
        config: PolicyConfig | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._config = config or PolicyConfig()
        self._rng = rng or random.Random()
        self._clock = clock
        self._max_keys = max_keys
        self._keys: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()  # LRU first
        self._groups: dict[str, int] = {}  # worker id -> keys assigned

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        if request.routing_key is None:
            return self._assign(workers)
        key = (request.model_id, request.routing_key)
        entry = self._keys.get(key)
        chosen = None
        if entry is not None:
            chosen = next((w for w in workers if worker_id(w) == entry[0]), None)
            if chosen is None:
                self._release(entry[0])
        if chosen is None:
            chosen = self._assign(workers)
            self._groups[worker_id(chosen)] = self._groups.get(worker_id(chosen), 0) + 1
        self._keys[key] = (worker_id(chosen), self._clock())
        self._keys.move_to_end(key)
        while len(self._keys) > self._max_keys:
            _, (wid, _) = self._keys.popitem(last=False)
            self._release(wid)
        return chosen

    def maintain(self, now: float) -> None:
        """Drop keys idle for longer than ``max_idle_secs`` (``now`` on the policy's clock)."""
        horizon = now - self._config.max_idle_secs
        while self._keys:
            key, (wid, last) = next(iter(self._keys.items()))
            if last >= horizon:
                break
            del self._keys[key]
            self._release(wid)

    def assigned(self, model_id: str, routing_key: str) -> str | None:
        """The worker id a key is stuck to, if any."""
        entry = self._keys.get((model_id, routing_key))
        return entry[0] if entry else None

    def keys_per_worker(self) -> dict[str, int]:
        """How many keys each worker owns (what ``min_group`` balances)."""
        return dict(self._groups)

    def __len__(self) -> int:
        return len(self._keys)

    def _assign(self, workers: Sequence[Worker]) -> Worker:
        mode = self._config.assignment_mode
        match mode:
            case "random":
                return workers[self._rng.randrange(len(workers))]
            case "min_load":
                return least_loaded(workers)
            case "min_group":
                return min(workers, key=lambda w: self._groups.get(worker_id(w), 0))
            case _:
                assert_never(mode)

    def _release(self, wid: str) -> None:
        left = self._groups.get(wid, 0) - 1
        if left > 0:
            self._groups[wid] = left
        else:
            self._groups.pop(wid, None)
