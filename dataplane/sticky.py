"""``--routing-key-override``: requests with ``X-SMG-Routing-Key`` stick to a worker, whatever the policy."""

from __future__ import annotations

from collections.abc import Sequence

from dataplane.routing import KvEventSink, Policy, RouteRequest
from dataplane.workers import Worker


class StickyKeys:
    """Keyed requests go through ``sticky`` (the ``manual`` policy's key map), the others through ``inner``.

    A pinned request (``X-SMG-Target-Worker``) stays with ``inner``, which knows how to honour the pin.
    """

    def __init__(self, inner: Policy, sticky: Policy) -> None:
        self._inner = inner
        self._sticky = sticky
        self.name = inner.name
        self.needs_loads: bool = inner.needs_loads
        self.kv_events: KvEventSink | None = inner.kv_events

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        if request.routing_key is not None and request.target_worker is None:
            return self._sticky.select(request, workers)
        return self._inner.select(request, workers)

    def maintain(self, now: float) -> None:
        self._inner.maintain(now)
        self._sticky.maintain(now)
