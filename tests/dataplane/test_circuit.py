"""The circuit breaker's state machine, and the registry's routable snapshot that follows it."""

from __future__ import annotations

import pytest

from dataplane.circuit import FAILURE_STATUSES, BreakerConfig, CircuitBreaker
from dataplane.config import WorkerUrl
from dataplane.types import WorkerInfo
from dataplane.workers import Worker, WorkerRegistry
from tests.fakes.worker import FakeClient

CONFIG = BreakerConfig(failure_threshold=3, success_threshold=2, timeout_secs=10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_opens_after_consecutive_failures_only(clock: Clock) -> None:
    breaker = CircuitBreaker(CONFIG, clock)
    for status in (500, 503, 200, 502, 429):  # a success in between restarts the count
        assert breaker.record(status) is False
    assert breaker.state == "closed"
    assert breaker.record(504) is True
    assert breaker.state == "open" and not breaker.allows()
    assert breaker.reopens_at == 110.0


@pytest.mark.parametrize("status", [200, 400, 401, 404, 409, 501])
def test_statuses_outside_the_failure_set_count_as_successes(clock: Clock, status: int) -> None:
    breaker = CircuitBreaker(CONFIG, clock)
    for _ in range(10):
        breaker.record(500)
        breaker.record(500)
        breaker.record(status)
    assert breaker.state == "closed"


def test_failure_set_is_smgs() -> None:
    assert frozenset({408, 429, 500, 502, 503, 504}) == FAILURE_STATUSES


def test_half_open_when_the_timeout_elapsed_then_closed_after_successes(clock: Clock) -> None:
    breaker = CircuitBreaker(CONFIG, clock)
    for _ in range(3):
        breaker.record(503)
    clock.now += 9.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open" and breaker.allows()  # noticed when asked
    assert breaker.record(200) is False
    assert breaker.state == "half_open"
    breaker.record(200)
    assert breaker.state == "closed" and breaker.reopens_at is None


def test_any_failure_in_half_open_opens_again_for_a_full_timeout(clock: Clock) -> None:
    breaker = CircuitBreaker(CONFIG, clock)
    for _ in range(3):
        breaker.record(500)
    clock.now += 10
    breaker.record(200)
    assert breaker.record(500) is True  # one failure suffices
    assert breaker.state == "open" and breaker.reopens_at == clock.now + 10


def test_half_open_needs_consecutive_successes(clock: Clock) -> None:
    breaker = CircuitBreaker(CONFIG, clock)
    for _ in range(3):
        breaker.record(500)
    clock.now += 10
    breaker.record(200)
    breaker.record(500)
    clock.now += 10
    breaker.record(200)  # the success before the reopening does not count
    assert breaker.state == "half_open"


def test_disabled_breaker_never_opens(clock: Clock) -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, enabled=False), clock)
    for _ in range(100):
        assert breaker.record(503) is False
    assert breaker.state == "closed"


def _worker(i: int, clock: Clock) -> Worker:
    url = f"grpc://127.0.0.1:{7000 + i}"
    client = FakeClient(url, lambda _: [], WorkerInfo("m", "", "", 0, (), "default"))
    return Worker(
        url=WorkerUrl.parse(url),
        client=client,
        model_id="m",
        status="ready",
        breaker=CircuitBreaker(BreakerConfig(failure_threshold=1, timeout_secs=5.0), clock),
    )


def test_registry_leaves_open_workers_out_until_their_timeout(clock: Clock) -> None:
    registry = WorkerRegistry(clock)
    a, b = _worker(0, clock), _worker(1, clock)
    registry.add(a)
    registry.add(b)
    assert registry.routable("m") == (a, b)
    registry.record_outcome(a, 503)
    assert registry.routable("m") == (b,)
    assert a.describe()["circuit_breaker"] == "open"
    registry.record_outcome(b, 200)
    clock.now += 4.9
    assert registry.routable("m") == (b,)
    clock.now += 0.1
    assert registry.routable("m") == (a, b)  # rebuilt lazily, on the first lookup after the timeout
    assert a.breaker.state == "half_open"
    assert registry.ready_count() == 2  # the breaker does not change the health status


def test_open_breaker_of_an_unready_worker_does_not_rebuild_every_lookup(clock: Clock) -> None:
    registry = WorkerRegistry(clock)
    a = _worker(0, clock)
    registry.add(a)
    registry.record_outcome(a, 500)
    registry.set_status(a, "not_ready")
    clock.now += 60
    published = []
    registry.on_change(lambda: published.append(1))
    for _ in range(5):
        assert registry.routable("m") == ()
    assert len(published) == 1
