"""The health-check state machine: thresholds, terminal states, no flapping, and the monitor loop."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from dataplane.config import WorkerUrl
from dataplane.health import HealthPolicy, monitor_health, record_probe
from dataplane.types import WorkerInfo
from dataplane.workers import Worker, WorkerRegistry, WorkerStatus
from tests.dataplane.gateways import until
from tests.fakes.worker import FakeClient

POLICY = HealthPolicy(interval=0.01, timeout=1.0, failure_threshold=2, success_threshold=3)
INFO = WorkerInfo("m", "", "", 0, (), "default")


def worker(status: WorkerStatus = "ready", i: int = 0) -> tuple[WorkerRegistry, Worker]:
    registry = WorkerRegistry()
    url = f"grpc://127.0.0.1:{7100 + i}"
    w = Worker(
        url=WorkerUrl.parse(url), client=FakeClient(url, lambda _: [], INFO), model_id="m", status=status
    )
    registry.add(w)
    return registry, w


def probe(registry: WorkerRegistry, w: Worker, results: str) -> list[WorkerStatus]:
    """Feed results ('+' good, '-' failed); the status after each."""
    seen = []
    for r in results:
        record_probe(registry, w, r == "+", POLICY)
        seen.append(w.status)
    return seen


def test_ready_to_not_ready_after_failure_threshold() -> None:
    registry, w = worker()
    assert probe(registry, w, "-+-+") == ["ready"] * 4  # not consecutive
    assert probe(registry, w, "--") == ["ready", "not_ready"]
    assert registry.routable("m") == ()


def test_not_ready_back_to_ready_after_success_threshold() -> None:
    registry, w = worker()
    probe(registry, w, "--")
    assert probe(registry, w, "++-+++") == ["not_ready"] * 5 + ["ready"]
    assert registry.routable("m") == (w,)


def test_not_ready_fails_at_three_times_the_failure_threshold() -> None:
    registry, w = worker()
    # 2 failures make it not ready; the 6th consecutive one (3 × 2) makes it failed.
    assert probe(registry, w, "------") == ["ready", *["not_ready"] * 4, "failed"]


def test_failed_is_terminal() -> None:
    registry, w = worker()
    probe(registry, w, "------")
    assert probe(registry, w, "+" * 20) == ["failed"] * 20


def test_pending_fails_after_ten_times_the_failure_threshold_probes() -> None:
    registry, w = worker("pending")
    # Good probes do not make a worker ready: only registering does. Unregistered, it fails after 20.
    assert probe(registry, w, "+-" * 9 + "+") == ["pending"] * 19
    assert probe(registry, w, "+") == ["failed"]


def test_draining_is_not_probed() -> None:
    registry, w = worker("draining")
    assert probe(registry, w, "------") == ["draining"] * 6


@pytest.mark.parametrize("start", ["ready", "not_ready"])
@pytest.mark.parametrize("pattern", ["+-", "-+", "++-", "-++"])
def test_flapping_results_never_flip_a_worker(start: WorkerStatus, pattern: str) -> None:
    # Each pattern repeated stays below both thresholds in a row (failure 2, success 3).
    registry, w = worker(start)
    assert set(probe(registry, w, pattern * 100)) == {start}


async def test_monitor_probes_and_reports_failed_workers() -> None:
    registry, sick = worker("ready", 0)
    healthy = Worker(
        url=WorkerUrl.parse("grpc://127.0.0.1:7199"),
        client=FakeClient("h", lambda _: [], INFO),
        model_id="m",
        status="ready",
    )
    registry.add(healthy)
    assert isinstance(sick.client, FakeClient)
    sick.client.healthy = False
    failed: list[Worker] = []
    reported = asyncio.Event()

    def on_failed(w: Worker) -> None:
        failed.append(w)
        reported.set()

    task = asyncio.create_task(monitor_health(registry, POLICY, on_failed))
    try:
        await asyncio.wait_for(reported.wait(), 5)
        for _ in range(5):  # a failed worker is reported once and no longer probed
            await asyncio.sleep(POLICY.interval)
    finally:
        task.cancel()
    assert failed == [sick]
    assert (sick.status, healthy.status) == ("failed", "ready")


async def test_a_probe_that_raises_counts_as_failed() -> None:
    registry, w = worker()
    probes = itertools.count()

    async def broken(timeout: float) -> bool:
        next(probes)
        raise RuntimeError("bug")

    w.client.health = broken  # type: ignore[method-assign]
    task = asyncio.create_task(monitor_health(registry, POLICY, lambda _: None))
    try:
        await until(lambda: w.status != "ready")
    finally:
        task.cancel()
    assert w.status == "not_ready"
