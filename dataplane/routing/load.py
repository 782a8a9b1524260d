"""Load-aware policies: ``power_of_two`` and ``least_load``."""

from __future__ import annotations

import random
from collections.abc import Sequence

from dataplane.config import PolicyConfig
from dataplane.routing.base import KvEventSink, RouteRequest
from dataplane.routing.candidates import least_loaded, worker_id
from dataplane.types import EngineLoad
from dataplane.workers import Worker

__all__ = ["LeastLoad", "PowerOfTwo"]

_MAX_KV_USAGE = 0.999  # keeps λ·k/(1−k) finite for a worker that reports a full cache


class PowerOfTwo:
    """Two distinct random candidates; the one with the lower KV usage (both reported) or fewer requests."""

    name = "power_of_two"
    needs_loads = True
    kv_events: KvEventSink | None = None

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        if len(workers) == 1:
            return workers[0]
        i, j = self._rng.sample(range(len(workers)), 2)
        a, b = workers[i], workers[j]
        if a.engine_load is not None and b.engine_load is not None:
            return b if b.engine_load.token_usage < a.engine_load.token_usage else a
        return b if b.load < a.load else a

    def maintain(self, now: float) -> None:
        pass


class LeastLoad:
    """Argmin of the expected wait: ``(queued + inflight) / throughput + λ·k/(1−k)``.

    ``inflight`` is the prompt tokens this gateway sent a worker since its last load sample (the sample
    cannot know them yet); it restarts from zero when a newer sample arrives. A worker that reports no
    load is estimated from its leases (``load × mean_prefill_tokens``, no queue, no KV pressure); when no
    worker reports, this is join-shortest-queue on the leases.
    """

    name = "least_load"
    needs_loads = True
    kv_events: KvEventSink | None = None

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self._config = config or PolicyConfig()
        self._inflight: dict[str, tuple[float, int]] = {}  # worker id -> (sample received_at, tokens since)
        self._seen: set[str] = set()

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        if all(w.engine_load is None for w in workers):
            return least_loaded(workers)
        best, best_cost = workers[0], self.cost(workers[0])
        for w in workers[1:]:
            cost = self.cost(w)
            if cost < best_cost or (cost == best_cost and w.load < best.load):
                best, best_cost = w, cost
        self._seen.update(worker_id(w) for w in workers)
        tokens = len(request.token_ids) if request.token_ids is not None else None
        self._dispatched(best, tokens or self._config.least_load_mean_prefill_tokens)
        return best

    def cost(self, worker: Worker) -> float:
        """The expected seconds before ``worker`` starts on one more request."""
        c = self._config
        load = worker.engine_load
        if load is None:
            return worker.load * c.least_load_mean_prefill_tokens / c.least_load_default_throughput
        throughput = load.gen_throughput if load.gen_throughput > 0 else c.least_load_default_throughput
        k = min(max(load.token_usage, 0.0), _MAX_KV_USAGE)
        work = _queued_tokens(load, c.least_load_mean_prefill_tokens) + self._since_sample(worker, load)
        return work / throughput + c.least_load_kv_pressure_weight * k / (1 - k)

    def maintain(self, now: float) -> None:
        """Forget workers that were not a candidate since the last upkeep."""
        self._inflight = {k: v for k, v in self._inflight.items() if k in self._seen}
        self._seen = set()

    def _since_sample(self, worker: Worker, load: EngineLoad) -> int:
        entry = self._inflight.get(worker_id(worker))
        return entry[1] if entry is not None and entry[0] == load.received_at else 0

    def _dispatched(self, worker: Worker, tokens: int) -> None:
        if worker.engine_load is None:
            return
        at = worker.engine_load.received_at
        self._inflight[worker_id(worker)] = (at, self._since_sample(worker, worker.engine_load) + tokens)


def _queued_tokens(load: EngineLoad, mean_prefill_tokens: int) -> int:
    """Queued uncached prompt tokens; engines that do not report them are estimated per waiting request."""
    if load.waiting_uncached_tokens is not None:
        return load.waiting_uncached_tokens
    return load.waiting_requests * mean_prefill_tokens
