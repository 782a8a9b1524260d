"""make_policy builds every SMG policy by name; the simple ones need nothing but the candidates."""

from __future__ import annotations

import random
from typing import get_args

import pytest

from dataplane.config import PolicyConfig, PolicyName
from dataplane.routing import Random, RoundRobin, RouteRequest, make_policy
from tests.dataplane.routing.fleet import MODEL, fleet, route

LOAD_AWARE = {"power_of_two", "least_load", "cache_aware"}


@pytest.mark.parametrize("name", get_args(PolicyName))
def test_every_policy_name_builds_and_routes(name: PolicyName) -> None:
    policy = make_policy(name, PolicyConfig())
    ws = fleet(3)
    assert policy.name == name
    assert policy.needs_loads == (name in LOAD_AWARE)
    assert (policy.kv_events is not None) == (name == "cache_aware")
    assert route(policy, ws, RouteRequest(MODEL, text="hello", token_ids=list(range(40)))) in ws
    policy.maintain(0.0)


def test_an_unknown_policy_is_a_value_error_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="cache_aware"):
        make_policy("bucket")  # type: ignore[arg-type]


def test_round_robin_cycles_per_model() -> None:
    ws, policy = fleet(3), RoundRobin()
    assert [route(policy, ws, RouteRequest(MODEL)) for _ in range(4)] == [ws[0], ws[1], ws[2], ws[0]]
    assert route(policy, ws, RouteRequest("other")) is ws[0]


def test_random_covers_every_worker() -> None:
    ws, policy = fleet(3), Random(random.Random(1))
    assert {route(policy, ws, RouteRequest(MODEL)) for _ in range(60)} == set(ws)
