"""Worker selection: the routing policies and the cache indexes they use."""

from __future__ import annotations

from dataplane.routing.base import POLICIES, Policy, PolicyConfig, PolicyName, RouteRequest
from dataplane.routing.simple import Random, RoundRobin

__all__ = ["POLICIES", "Policy", "PolicyConfig", "PolicyName", "RouteRequest", "make_policy"]


def make_policy(name: PolicyName, config: PolicyConfig | None = None) -> Policy:
    """The policy called ``name``, with SMG's knobs from ``config``."""
    if name == "round_robin":
        return RoundRobin()
    if name == "random":
        return Random()
    raise NotImplementedError(f"policy {name} is not built yet")
