"""Worker selection: the routing policies and the cache indexes they use."""

from __future__ import annotations

from typing import get_args

from dataplane.routing.base import POLICIES, KvEventSink, Policy, PolicyConfig, PolicyName, RouteRequest
from dataplane.routing.cache_aware import CacheAware
from dataplane.routing.hashing import ConsistentHashing, PrefixHash
from dataplane.routing.kv_index import KvIndex
from dataplane.routing.load import LeastLoad, PowerOfTwo
from dataplane.routing.manual import Manual
from dataplane.routing.radix import RadixTree
from dataplane.routing.simple import Random, RoundRobin

__all__ = [
    "POLICIES",
    "CacheAware",
    "ConsistentHashing",
    "KvEventSink",
    "KvIndex",
    "LeastLoad",
    "Manual",
    "Policy",
    "PolicyConfig",
    "PolicyName",
    "PowerOfTwo",
    "PrefixHash",
    "RadixTree",
    "Random",
    "RoundRobin",
    "RouteRequest",
    "make_policy",
]


def make_policy(name: PolicyName, config: PolicyConfig | None = None) -> Policy:
    """The policy called ``name``, with SMG's knobs from ``config``; an unknown name is a ``ValueError``."""
    config = config or PolicyConfig()
    match name:
        case "random":
            return Random()
        case "round_robin":
            return RoundRobin()
        case "power_of_two":
            return PowerOfTwo()
        case "least_load":
            return LeastLoad(config)
        case "cache_aware":
            return CacheAware(config)
        case "consistent_hashing":
            return ConsistentHashing()
        case "prefix_hash":
            return PrefixHash(config)
        case "manual":
            return Manual(config)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(get_args(PolicyName))}")
