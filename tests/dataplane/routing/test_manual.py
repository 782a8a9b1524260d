"""manual: sticky routing keys, remapped only when their worker is gone; idle and LRU eviction."""

from __future__ import annotations

import random

from dataplane.config import AssignmentMode, PolicyConfig
from dataplane.routing import Manual, RouteRequest
from dataplane.routing.candidates import worker_id
from tests.dataplane.routing.fleet import MODEL, fleet, route


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def manual(mode: AssignmentMode = "random", **kw: object) -> tuple[Manual, Clock]:
    clock = Clock()
    config = PolicyConfig(assignment_mode=mode, max_idle_secs=100.0)
    return Manual(config, rng=random.Random(5), clock=clock, **kw), clock  # type: ignore[arg-type]


def keyed(key: str, model: str = MODEL) -> RouteRequest:
    return RouteRequest(model, routing_key=key)


def test_a_key_sticks_to_its_worker_whatever_the_load() -> None:
    ws = fleet(4)
    policy, _ = manual("min_load")
    first = route(policy, ws, keyed("alice"))
    first.load = 100
    assert all(route(policy, ws, keyed("alice")) is first for _ in range(20))
    assert route(policy, ws, keyed("bob")) is not first


def test_a_key_moves_only_when_its_worker_is_not_a_candidate() -> None:
    ws = fleet(3)
    policy, _ = manual()
    first = route(policy, ws, keyed("k"))
    others = [w for w in ws if w is not first]
    moved = route(policy, others, keyed("k"))
    assert moved in others
    assert route(policy, ws, keyed("k")) is moved  # the old worker's return does not steal it back
    assert policy.assigned(MODEL, "k") == worker_id(moved)


def test_min_group_balances_the_number_of_keys() -> None:
    ws = fleet(4)
    policy, _ = manual("min_group")
    counts = {w: 0 for w in ws}
    for i in range(12):
        counts[route(policy, ws, keyed(f"k{i}"))] += 1
    assert set(counts.values()) == {3}


def test_min_group_counts_a_remapped_key_once() -> None:
    ws = fleet(2)
    policy, _ = manual("min_group")
    route(policy, ws, keyed("a"))  # -> ws[0]
    route(policy, ws[1:], keyed("a"))  # ws[0] gone: moves to ws[1]
    assert policy.keys_per_worker() == {worker_id(ws[1]): 1}
    assert route(policy, ws, keyed("b")) is ws[0]


def test_min_load_assigns_new_keys_and_keyless_requests_to_the_least_loaded() -> None:
    ws = fleet(3)
    ws[0].load, ws[1].load, ws[2].load = 4, 1, 2
    policy, _ = manual("min_load")
    assert route(policy, ws, keyed("new")) is ws[1]
    assert route(policy, ws, RouteRequest(MODEL)) is ws[1]
    assert len(policy) == 1  # keyless requests leave nothing behind


def test_keys_are_per_model() -> None:
    ws = fleet(2)
    policy, _ = manual("min_group")
    assert route(policy, ws, keyed("k", "m1")) is ws[0]
    assert route(policy, ws, keyed("k", "m2")) is ws[1]


def test_idle_keys_are_evicted_and_used_ones_kept() -> None:
    ws = fleet(4)
    policy, clock = manual()
    route(policy, ws, keyed("idle"))
    clock.now = 60.0
    route(policy, ws, keyed("busy"))
    policy.maintain(150.0)
    assert policy.assigned(MODEL, "idle") is None
    assert policy.assigned(MODEL, "busy") is not None
    policy.maintain(161.0)
    assert len(policy) == 0


def test_the_map_is_bounded_and_drops_the_least_recently_used() -> None:
    ws = fleet(2)
    policy, clock = manual("min_group", max_keys=10)
    for i in range(100):
        clock.now = float(i)
        route(policy, ws, keyed(f"k{i}"))
        route(policy, ws, keyed("hot"))
    assert len(policy) == 10
    assert policy.assigned(MODEL, "hot") is not None
    assert policy.assigned(MODEL, "k0") is None
    assert sum(policy.keys_per_worker().values()) == 10
    policy.maintain(1000.0)
    assert len(policy) == 0
    assert policy.keys_per_worker() == {}
    counts = {w: 0 for w in ws}
    for i in range(10):
        counts[route(policy, ws, keyed(f"new{i}"))] += 1
    assert counts[ws[0]] == counts[ws[1]] == 5  # no group count outlived its keys
