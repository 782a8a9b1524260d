"""Workers, the registry that holds them, and the load leases.

The registry publishes immutable per-model snapshots (tuples) of the routable workers — status ``ready``
and circuit breaker not open — so a routing decision never sees a list that is being mutated and costs
one dict lookup. Snapshots are rebuilt when membership, a status or a breaker's openness changes; an
open breaker's timeout is noticed lazily, on the first lookup after it elapsed. Load counters live on
the worker and every lease gives back what it took.

Worker states (SMG's; transitions in ``dataplane/health.py``)::

    pending ──registered──► ready ◄──success_threshold──► not_ready ──3×failure_threshold──► failed
       └───────10×failure_threshold probes unregistered──────────────────────────────────────► failed
    any ──DELETE /workers/{id}──► draining ──in-flight requests done──► removed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from dataplane.circuit import BreakerConfig, CircuitBreaker
from dataplane.config import WorkerType, WorkerUrl
from dataplane.types import EngineLoad

if TYPE_CHECKING:
    from dataplane.client import WorkerClient

log = logging.getLogger(__name__)
WorkerStatus = Literal["pending", "ready", "not_ready", "failed", "draining"]


@dataclass(eq=False, slots=True)
class Worker:
    """One worker endpoint and its live state."""

    url: WorkerUrl
    client: WorkerClient
    worker_type: WorkerType = "regular"
    bootstrap_port: int | None = None  # a PD prefill worker's (None: SGLang's default)
    model_id: str = ""
    status: WorkerStatus = "pending"
    load: int = 0  # requests in flight through this gateway (leases)
    engine_load: EngineLoad | None = None  # the worker's own figures, when it reports them
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    pending_probes: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(BreakerConfig()))
    id: str = field(init=False)
    idle: asyncio.Event | None = None  # set when the last lease of a draining worker ends

    def __post_init__(self) -> None:
        self.id = self.url.worker_id

    @property
    def healthy(self) -> bool:
        return self.status == "ready"

    @property
    def routable(self) -> bool:
        """Ready and not shut out by its circuit breaker (SMG's "healthy" for routing)."""
        return self.status == "ready" and self.breaker.allows()

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "url": self.url.url,
            "model_id": self.model_id,
            "connection_mode": self.url.mode,
            "runtime_type": self.client.runtime,
            "worker_type": self.worker_type,
            "is_healthy": self.healthy,
            "status": self.status,
            "load": self.load,
            "circuit_breaker": self.breaker.state,
            "engine_load": _describe_load(self.engine_load),
            "labels": self.labels,
        }


def _describe_load(load: EngineLoad | None) -> dict[str, object] | None:
    if load is None:
        return None
    return {
        "running_requests": load.running_requests,
        "waiting_requests": load.waiting_requests,
        "token_usage": load.token_usage,
        "gen_throughput": load.gen_throughput,
        "waiting_uncached_tokens": load.waiting_uncached_tokens,
        "age_secs": round(max(time.monotonic() - load.received_at, 0.0), 3),
    }


class DuplicateWorker(Exception):
    """A worker with the same address is already registered."""


class WorkerRegistry:
    """All workers, by id (insertion order), and the routable snapshot per model."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # the breakers' clock
        self._workers: dict[str, Worker] = {}
        self._routable: dict[str, tuple[Worker, ...]] = {}
        self._served: frozenset[str] = frozenset()  # models with at least one registered worker
        self._reopen_at = math.inf  # earliest moment an open breaker lets requests through again
        self._listeners: list[Callable[[], None]] = []

    # --- membership ----------------------------------------------------------------------------------

    def add(self, worker: Worker) -> None:
        if worker.id in self._workers:
            raise DuplicateWorker(f"worker {worker.url.url} is already registered (id {worker.id})")
        self._workers[worker.id] = worker
        self._publish()

    def remove(self, worker: Worker) -> None:
        if self._workers.get(worker.id) is worker:
            del self._workers[worker.id]
            self._publish()

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def all(self) -> tuple[Worker, ...]:
        return tuple(self._workers.values())

    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self._served))

    def serves(self, model_id: str) -> bool:
        """Whether any worker (in whatever state) registered for the model."""
        return model_id in self._served

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    # --- the hot path --------------------------------------------------------------------------------

    def routable(self, model_id: str) -> tuple[Worker, ...]:
        """The model's workers a request may go to now (ready, breaker not open)."""
        if self._reopen_at <= self._clock():
            self._publish()
        return self._routable.get(model_id, ())

    def ready_count(self) -> int:
        return sum(w.healthy for w in self._workers.values())

    def record_outcome(self, worker: Worker, status: int) -> None:
        """One request attempt's outcome (HTTP-equivalent status) for the worker's circuit breaker."""
        if worker.breaker.record(status):
            log.warning("worker %s: circuit breaker open after status %d", worker.url.url, status)
            self._publish()

    @contextlib.contextmanager
    def lease(self, worker: Worker) -> Iterator[Worker]:
        """Count the request on the worker for exactly as long as it runs, whatever way it ends."""
        worker.load += 1
        try:
            yield worker
        finally:
            worker.load -= 1
            if worker.idle is not None and worker.load == 0:
                worker.idle.set()

    # --- state ---------------------------------------------------------------------------------------

    def set_status(self, worker: Worker, status: WorkerStatus) -> None:
        if worker.status != status:
            level = logging.INFO if status in ("ready", "draining") else logging.WARNING
            log.log(level, "worker %s: %s -> %s", worker.url.url, worker.status, status)
            worker.status = status
            self._publish()

    async def wait_idle(self, worker: Worker) -> None:
        """Return once no request holds a lease on ``worker``."""
        if worker.load == 0:
            return
        worker.idle = asyncio.Event()
        await worker.idle.wait()

    def _publish(self) -> None:
        snapshot: dict[str, list[Worker]] = {}
        reopen_at = math.inf
        for w in self._workers.values():
            if not w.breaker.allows():  # asking moves an open breaker whose time is up to half_open
                reopen_at = min(reopen_at, w.breaker.reopens_at or math.inf)
            elif w.status == "ready" and w.model_id:
                snapshot.setdefault(w.model_id, []).append(w)
        self._routable = {model: tuple(ws) for model, ws in snapshot.items()}
        self._served = frozenset(w.model_id for w in self._workers.values() if w.model_id)
        self._reopen_at = reopen_at
        for listener in self._listeners:
            listener()
