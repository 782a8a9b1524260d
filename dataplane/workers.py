"""Workers, the registry that holds them, load leases and the health monitor.

The registry publishes immutable per-model snapshots (tuples) so a routing decision never sees a list
that is being mutated; load counters live on the worker and every lease gives back what it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from dataplane.client import WorkerClient
from dataplane.config import WorkerUrl
from dataplane.types import EngineLoad

log = logging.getLogger(__name__)
WorkerStatus = Literal["pending", "ready", "not_ready"]


@dataclass(eq=False, slots=True)
class Worker:
    """One worker endpoint and its live state."""

    url: WorkerUrl
    client: WorkerClient
    model_id: str = ""
    status: WorkerStatus = "pending"
    load: int = 0  # requests in flight through this gateway (leases)
    engine_load: EngineLoad | None = None  # the worker's own figures, when it reports them
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.status == "ready"

    def describe(self) -> dict[str, object]:
        return {
            "id": self.url.url,
            "url": self.url.url,
            "model_id": self.model_id,
            "connection_mode": self.url.mode,
            "worker_type": "regular",
            "is_healthy": self.healthy,
            "status": self.status,
            "load": self.load,
            "labels": self.labels,
        }


class WorkerRegistry:
    """All workers, by model. Snapshots are rebuilt on every membership or health change."""

    def __init__(self) -> None:
        self._workers: list[Worker] = []
        self._healthy: dict[str, tuple[Worker, ...]] = {}
        self._listeners: list[Callable[[], None]] = []

    def add(self, worker: Worker) -> None:
        self._workers.append(worker)
        self._publish()

    def all(self) -> tuple[Worker, ...]:
        return tuple(self._workers)

    def models(self) -> tuple[str, ...]:
        return tuple(sorted({w.model_id for w in self._workers if w.model_id}))

    def healthy(self, model_id: str) -> tuple[Worker, ...]:
        return self._healthy.get(model_id, ())

    def healthy_count(self) -> int:
        return sum(len(ws) for ws in self._healthy.values())

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def set_status(self, worker: Worker, status: WorkerStatus) -> None:
        if worker.status != status:
            level = logging.INFO if status == "ready" else logging.WARNING
            log.log(level, "worker %s: %s -> %s", worker.url.url, worker.status, status)
            worker.status = status
            self._publish()

    @contextlib.contextmanager
    def lease(self, worker: Worker) -> Iterator[Worker]:
        """Count the request on the worker for exactly as long as it runs, whatever way it ends."""
        worker.load += 1
        try:
            yield worker
        finally:
            worker.load -= 1

    def _publish(self) -> None:
        snapshot: dict[str, list[Worker]] = {}
        for w in self._workers:
            if w.healthy and w.model_id:
                snapshot.setdefault(w.model_id, []).append(w)
        self._healthy = {model: tuple(ws) for model, ws in snapshot.items()}
        for listener in self._listeners:
            listener()


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int


async def monitor_health(registry: WorkerRegistry, policy: HealthPolicy) -> None:
    """Probe every registered worker forever; flip status only after consecutive results agree."""
    while True:
        await asyncio.sleep(policy.interval)
        workers = [w for w in registry.all() if w.status != "pending"]
        results = await asyncio.gather(*(w.client.health(policy.timeout) for w in workers))
        for worker, ok in zip(workers, results, strict=True):
            record_probe(registry, worker, ok, policy)


def record_probe(registry: WorkerRegistry, worker: Worker, ok: bool, policy: HealthPolicy) -> None:
    if ok:
        worker.consecutive_failures = 0
        worker.consecutive_successes += 1
        if not worker.healthy and worker.consecutive_successes >= policy.success_threshold:
            registry.set_status(worker, "ready")
    else:
        worker.consecutive_successes = 0
        worker.consecutive_failures += 1
        if worker.healthy and worker.consecutive_failures >= policy.failure_threshold:
            registry.set_status(worker, "not_ready")
