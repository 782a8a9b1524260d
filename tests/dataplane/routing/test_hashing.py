"""consistent_hashing and prefix_hash: stable placement on a ring, pinning, and load spill-over."""

from __future__ import annotations

import random
import subprocess
import sys

from dataplane.config import PolicyConfig
from dataplane.routing import ConsistentHashing, PrefixHash, RouteRequest
from dataplane.routing.ring import HashRing, RingCache, stable_hash
from tests.dataplane.routing.fleet import MODEL, fleet, route


def keyed(key: str) -> RouteRequest:
    return RouteRequest(MODEL, routing_key=key)


def test_a_routing_key_stays_on_its_worker() -> None:
    ws, policy = fleet(4), ConsistentHashing()
    for key in ("alice", "bob", "carol"):
        first = route(policy, ws, keyed(key))
        assert all(route(policy, ws, keyed(key)) is first for _ in range(20))


def test_keys_spread_over_the_workers() -> None:
    ws, policy = fleet(4), ConsistentHashing()
    counts = {w: 0 for w in ws}
    for i in range(4000):
        counts[route(policy, ws, keyed(f"user-{i}"))] += 1
    assert min(counts.values()) > 4000 / 4 * 0.6


def test_a_fifth_worker_moves_about_a_fifth_of_the_keys_and_only_onto_itself() -> None:
    ws, policy = fleet(5), ConsistentHashing()
    keys = [f"session-{i}" for i in range(5000)]
    before = {k: route(policy, ws[:4], keyed(k)) for k in keys}
    after = {k: route(policy, ws, keyed(k)) for k in keys}
    moved = [k for k in keys if after[k] is not before[k]]
    assert 0.12 < len(moved) / len(keys) < 0.28
    assert all(after[k] is ws[4] for k in moved)


def test_removing_a_worker_moves_only_its_keys() -> None:
    ws, policy = fleet(4), ConsistentHashing()
    keys = [f"k{i}" for i in range(2000)]
    before = {k: route(policy, ws, keyed(k)) for k in keys}
    after = {k: route(policy, ws[1:], keyed(k)) for k in keys}
    assert all(after[k] is before[k] for k in keys if before[k] is not ws[0])


def test_target_worker_pins_an_index_and_refuses_out_of_range() -> None:
    ws, policy = fleet(3), ConsistentHashing()
    assert policy.select(RouteRequest(MODEL, target_worker="2", routing_key="x"), ws) is ws[2]
    for bad in ("3", "-1", "two"):
        assert policy.select(RouteRequest(MODEL, target_worker=bad), ws) is None


def test_no_key_is_random_over_all_workers() -> None:
    ws, policy = fleet(3), ConsistentHashing(random.Random(3))
    assert {route(policy, ws, RouteRequest(MODEL)) for _ in range(100)} == set(ws)


def test_ring_is_rebuilt_only_when_membership_changes() -> None:
    cache = RingCache()
    ring = cache.ring(MODEL, ("a", "b"))
    assert cache.ring(MODEL, ("a", "b")) is ring
    assert cache.ring(MODEL, ("a", "b", "c")) is not ring
    assert cache.ring("other", ("a", "b")) is not cache.ring(MODEL, ("a", "b", "c"))


def test_ring_walk_visits_every_worker_once() -> None:
    ring = HashRing(["a", "b", "c"])
    assert sorted(ring.walk(stable_hash(b"k"))) == [0, 1, 2]
    assert list(HashRing([]).walk(1)) == []


def test_stable_hash_agrees_across_processes() -> None:
    code = "from dataplane.routing.ring import stable_hash; print(stable_hash(b'routing-key'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == stable_hash(b"routing-key")


def prompt(prefix: int, rest: int = 0) -> RouteRequest:
    return RouteRequest(MODEL, token_ids=[prefix] * 300 + [rest] * 10)


def test_prefix_hash_sends_a_shared_prefix_to_one_worker_regardless_of_the_tail() -> None:
    ws, policy = fleet(4), PrefixHash()
    first = route(policy, ws, prompt(7, 0))
    assert all(route(policy, ws, prompt(7, tail)) is first for tail in range(1, 30))


def test_prefix_hash_hashes_only_the_first_prefix_token_count_tokens() -> None:
    ws, policy = fleet(8), PrefixHash(PolicyConfig(prefix_token_count=4))
    owners = {route(policy, ws, RouteRequest(MODEL, token_ids=[1, 2, 3, 4, t])) for t in range(50)}
    assert len(owners) == 1
    spread = {route(policy, ws, RouteRequest(MODEL, token_ids=[t, 2, 3, 4])) for t in range(50)}
    assert len(spread) > 3


def test_prefix_hash_uses_text_without_token_ids() -> None:
    ws, policy = fleet(4), PrefixHash()
    first = route(policy, ws, RouteRequest(MODEL, text="S" * 2000 + "question one"))
    assert route(policy, ws, RouteRequest(MODEL, text="S" * 2000 + "question two")) is first


def test_prefix_hash_spills_over_when_the_owner_is_overloaded() -> None:
    ws, policy = fleet(4), PrefixHash()
    owner = route(policy, ws, prompt(7))
    owner.load = 10  # average 2.5 × 1.25 < 10
    spill = route(policy, ws, prompt(7))
    assert spill is not owner
    assert route(policy, ws, prompt(7)) is spill  # the same second worker, so it caches the prefix too
    owner.load = 0
    assert route(policy, ws, prompt(7)) is owner
