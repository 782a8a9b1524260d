"""power_of_two and least_load: the lower of two random candidates; the smallest expected wait."""

from __future__ import annotations

import math
import random

import pytest

from dataplane.config import PolicyConfig
from dataplane.routing import LeastLoad, PowerOfTwo, RouteRequest
from dataplane.types import EngineLoad
from tests.dataplane.routing.fleet import MODEL, engine, fleet, route, worker

PLAIN = RouteRequest(MODEL)


def test_power_of_two_prefers_lower_kv_usage_over_local_load_when_both_report() -> None:
    busy_cache, busy_queue = worker(0, load=0, engine=engine(0.9)), worker(1, load=10, engine=engine(0.1))
    policy = PowerOfTwo(random.Random(1))
    assert {route(policy, [busy_cache, busy_queue], PLAIN) for _ in range(50)} == {busy_queue}
    assert policy.needs_loads


def test_power_of_two_falls_back_to_local_load_when_one_does_not_report() -> None:
    a, b = worker(0, load=5, engine=engine(0.0)), worker(1, load=1)
    assert {route(PowerOfTwo(random.Random(s)), [a, b], PLAIN) for s in range(20)} == {b}


def test_power_of_two_never_picks_the_unique_most_loaded_and_uses_the_rest() -> None:
    ws = fleet(4)
    for i, w in enumerate(ws):
        w.load = i
    policy = PowerOfTwo(random.Random(7))
    picks = {route(policy, ws, PLAIN) for _ in range(300)}
    assert ws[3] not in picks
    assert picks == set(ws[:3])


def test_power_of_two_single_worker() -> None:
    (only,) = fleet(1)
    assert route(PowerOfTwo(), [only], PLAIN) is only


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        (engine(0.5, queued=2000, throughput=1000.0), 2000 / 1000 + 0.15 * 0.5 / 0.5),
        (engine(0.0, queued=4000), 4000 / 2000),  # missing throughput -> default 2000 tok/s
        (engine(0.0, waiting=3), 3 * 1024 / 2000),  # no uncached-token figure -> mean prefill per waiting
        (engine(0.9), 0.15 * 0.9 / 0.1),
    ],
)
def test_least_load_cost(figures: EngineLoad, expected: float) -> None:
    w = worker(0, engine=figures)
    assert LeastLoad().cost(w) == pytest.approx(expected)


def test_least_load_full_cache_is_expensive_but_finite() -> None:
    cost = LeastLoad().cost(worker(0, engine=engine(1.0)))
    assert math.isfinite(cost) and cost > 100


def test_least_load_trades_queue_against_kv_pressure() -> None:
    queued = worker(0, engine=engine(0.0, queued=4000))  # 2.0 s
    pressured = worker(1, engine=engine(0.9))  # 1.35 s
    full = worker(2, engine=engine(0.99))  # 14.85 s
    assert route(LeastLoad(), [queued, pressured, full], PLAIN) is pressured


def test_least_load_counts_tokens_sent_since_the_last_sample() -> None:
    a, b = worker(0, engine=engine(at=1.0)), worker(1, engine=engine(at=1.0))
    policy = LeastLoad()
    big = RouteRequest(MODEL, token_ids=list(range(3000)))
    assert [route(policy, [a, b], big) for _ in range(3)] == [a, b, a]
    assert policy.cost(a) == pytest.approx(6000 / 2000)
    a.engine_load = engine(at=2.0)  # a fresh sample already includes what was sent before it
    assert policy.cost(a) == 0
    assert route(policy, [a, b], big) is a


def test_least_load_estimates_untokenized_requests_at_mean_prefill() -> None:
    config = PolicyConfig(least_load_mean_prefill_tokens=500, least_load_default_throughput=1000.0)
    policy = LeastLoad(config)
    a = worker(0, engine=engine(at=1.0))
    route(policy, [a], RouteRequest(MODEL, text="hello"))
    assert policy.cost(a) == pytest.approx(0.5)


def test_least_load_joins_the_shortest_queue_when_no_worker_reports() -> None:
    ws = fleet(3)
    for w, load in zip(ws, (3, 1, 2), strict=True):
        w.load = load
    assert route(LeastLoad(), ws, PLAIN) is ws[1]


def test_least_load_estimates_a_silent_worker_from_its_leases() -> None:
    reporting = worker(0, engine=engine(0.0, queued=3000))  # 1.5 s
    silent = worker(1, load=2)  # 2 × 1024 / 2000 ≈ 1.02 s
    assert route(LeastLoad(), [reporting, silent], PLAIN) is silent
    silent.load = 3  # ≈ 1.54 s
    assert route(LeastLoad(), [reporting, silent], PLAIN) is reporting


def test_least_load_forgets_workers_that_stopped_being_candidates() -> None:
    a, b = worker(0, engine=engine(at=1.0)), worker(1, engine=engine(at=1.0))
    policy = LeastLoad()
    big = RouteRequest(MODEL, token_ids=list(range(2000)))
    route(policy, [a], big)
    route(policy, [b], big)
    policy.maintain(0.0)
    assert policy.cost(a) == policy.cost(b) == 1.0
    policy.maintain(1.0)
    assert policy.cost(a) == policy.cost(b) == 0
