"""Policies that need nothing but the candidate list: ``random`` and ``round_robin``."""

from __future__ import annotations

import random
from collections.abc import Sequence

from dataplane.routing.base import KvEventSink, RouteRequest
from dataplane.workers import Worker


class RoundRobin:
    """Cycle through the routable workers, one counter per model."""

    name = "round_robin"
    needs_loads = False
    kv_events: KvEventSink | None = None

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        i = self._next.get(request.model_id, 0)
        self._next[request.model_id] = i + 1
        return workers[i % len(workers)]

    def maintain(self, now: float) -> None:
        pass


class Random:
    name = "random"
    needs_loads = False
    kv_events: KvEventSink | None = None

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        return workers[self._rng.randrange(len(workers))]

    def maintain(self, now: float) -> None:
        pass
