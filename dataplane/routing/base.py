"""What every routing policy sees: the request's routing facts, the candidate workers, the knobs.

A policy is pure selection over a snapshot: it never awaits, never mutates a worker, and answers in
time independent of the number of requests in flight. Load accounting (``Worker.load``) is done by the
registry's lease, not by policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dataplane.config import POLICIES, AssignmentMode, PolicyConfig, PolicyName
from dataplane.types import KvEventBatch
from dataplane.workers import Worker

__all__ = [
    "POLICIES",
    "AssignmentMode",
    "KvEventSink",
    "Policy",
    "PolicyConfig",
    "PolicyName",
    "RouteRequest",
]


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """The facts of one request a policy may route on.

    ``token_ids`` are the full prompt's ids (gRPC workers: the gateway tokenized it); ``text`` is the
    full rendered prompt or, for proxied HTTP workers, the request's text. Never route on the first
    message only (pitfalls.md): these always cover the whole prompt.
    """

    model_id: str
    text: str = ""
    token_ids: Sequence[int] | None = None
    routing_key: str | None = None  # X-SMG-Routing-Key
    target_worker: str | None = None  # X-SMG-Target-Worker: an index into the model's workers


class KvEventSink(Protocol):
    """Where the gateway feeds each worker's ``SubscribeKvEvents`` stream (in order, duplicates dropped)."""

    def apply(self, worker_id: str, batch: KvEventBatch) -> None: ...

    def forget(self, worker_id: str) -> None:
        """The worker is gone, or its stream restarts from scratch: drop what is known of its cache."""
        ...


class Policy(Protocol):
    name: str
    needs_loads: bool
    """Poll the workers' ``GetLoads`` for this policy (load-aware policies)."""
    kv_events: KvEventSink | None
    """Set when the policy routes on the workers' KV events (``cache_aware``); ``None`` otherwise."""

    def maintain(self, now: float) -> None:
        """Periodic upkeep (tree eviction, idle sticky keys), called every ``eviction_interval_secs``."""
        ...

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        """Pick one of ``workers`` (the model's routable workers, never empty), or ``None`` when the
        request pins a worker that is not among them (``X-SMG-Target-Worker``)."""
        ...
