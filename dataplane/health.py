"""Active health checks: probe every worker on an interval and move it through SMG's states.

A worker's status changes only after consecutive probes agree, so a flapping worker (alternating
results) never changes state when both thresholds are above one:

- ``pending`` becomes ``ready`` when its registration succeeds (model info and tokenizer: the worker
  answered), and ``failed`` once ``10 × failure_threshold`` probes went by without it registering;
- ``ready`` → ``not_ready`` after ``failure_threshold`` consecutive failed probes;
- ``not_ready`` → ``ready`` after ``success_threshold`` consecutive good ones, → ``failed`` once the
  consecutive failures reach ``3 × failure_threshold``;
- ``failed`` is terminal (removed only with ``--remove-unhealthy-workers``); ``draining`` is not probed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from dataplane.workers import Worker, WorkerRegistry

PROBED = frozenset({"pending", "ready", "not_ready"})


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int


def record_probe(registry: WorkerRegistry, worker: Worker, ok: bool, policy: HealthPolicy) -> None:
    """Count one probe result and apply the transition it completes, if any."""
    if worker.status not in PROBED:
        return
    if ok:
        worker.consecutive_failures = 0
        worker.consecutive_successes += 1
    else:
        worker.consecutive_successes = 0
        worker.consecutive_failures += 1
    failures, threshold = worker.consecutive_failures, policy.failure_threshold
    if worker.status == "pending":
        worker.pending_probes += 1
        if worker.pending_probes >= 10 * threshold:
            registry.set_status(worker, "failed")
    elif worker.status == "ready":
        if failures >= threshold:
            registry.set_status(worker, "not_ready")
    elif failures >= 3 * threshold:
        registry.set_status(worker, "failed")
    elif ok and worker.consecutive_successes >= policy.success_threshold:
        registry.set_status(worker, "ready")


async def monitor_health(
    registry: WorkerRegistry,
    policy: HealthPolicy,
    on_failed: Callable[[Worker], None],
    on_probe: Callable[[bool], None] = lambda ok: None,
) -> None:
    """Probe every worker that is not failed or draining, forever; ``on_probe`` with every result,
    ``on_failed`` for each worker that fails."""
    while True:
        await asyncio.sleep(policy.interval)
        workers = [w for w in registry.all() if w.status in PROBED]
        results = await asyncio.gather(
            *(w.client.health(policy.timeout) for w in workers), return_exceptions=True
        )
        for worker, ok in zip(workers, results, strict=True):
            on_probe(ok is True)
            record_probe(registry, worker, ok is True, policy)
            if worker.status == "failed":
                on_failed(worker)
