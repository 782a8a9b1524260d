"""What flows from the workers into routing in the background: engine loads and KV cache events.

- ``poll_loads``: every ``--load-monitor-interval``, each ready worker's ``GetLoads`` (when the policy
  routes on load); a worker whose KV-event stream pushes load records is not polled while they flow.
- ``KvFeed``: one long-lived ``SubscribeKvEvents`` stream per gRPC worker (when the policy routes on KV
  events), applied to the policy's sink in order (SMG's subscriber): resume at the last sequence seen;
  drop batches at or below it (a load-only heartbeat still gives its load); a gap reconnects at once to
  replay it; errors and ends reconnect after an exponential backoff (100 ms → 30 s); a worker that does
  not implement the RPC is left to the policy's approximate routing.
- ``maintain``: the policy's periodic upkeep (tree eviction, idle sticky keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from dataplane.errors import WorkerError
from dataplane.routing import KvEventSink, Policy
from dataplane.types import EngineLoad, KvEventBatch
from dataplane.workers import Worker, WorkerRegistry

log = logging.getLogger(__name__)
UNIMPLEMENTED = 501


async def poll_loads(registry: WorkerRegistry, interval: float, timeout: float) -> None:
    """Keep ``Worker.engine_load`` of every ready worker fresh, forever."""
    silent: set[str] = set()  # ids of workers that do not report loads
    while True:
        now = time.monotonic()
        due = [
            w
            for w in registry.all()
            if w.status == "ready"
            and w.id not in silent
            and (w.engine_load is None or now - w.engine_load.received_at >= interval / 2)
        ]
        results = await asyncio.gather(*(w.client.get_loads(timeout) for w in due), return_exceptions=True)
        for worker, result in zip(due, results, strict=True):
            if isinstance(result, EngineLoad):
                worker.engine_load = result
            elif result is None:
                log.info("worker %s does not report loads; not polled", worker.url.url)
                silent.add(worker.id)
            else:
                log.debug("GetLoads of %s failed: %s", worker.url.url, result)
        await asyncio.sleep(interval)


async def maintain(policy: Policy, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            policy.maintain(clock())
        except Exception:  # a bug in upkeep must not stop the next one
            log.exception("policy %s upkeep failed", policy.name)


def summed(loads: Sequence[EngineLoad]) -> EngineLoad:
    """Per-DP-rank loads as one: counts and rates add up, KV usage is the ranks' mean."""
    if len(loads) == 1:
        return loads[0]
    known = [load.waiting_uncached_tokens for load in loads if load.waiting_uncached_tokens is not None]
    return EngineLoad(
        running_requests=sum(load.running_requests for load in loads),
        waiting_requests=sum(load.waiting_requests for load in loads),
        token_usage=sum(load.token_usage for load in loads) / len(loads),
        gen_throughput=sum(load.gen_throughput for load in loads),
        waiting_uncached_tokens=sum(known) if len(known) == len(loads) else None,
        received_at=max(load.received_at for load in loads),
    )


class KvFeed:
    """One worker's ``SubscribeKvEvents`` stream into the policy's ``KvEventSink``.

    The sink knows the worker as ``worker.url.url`` (the key the routing policies use).
    """

    def __init__(
        self, worker: Worker, sink: KvEventSink, *, initial_backoff: float = 0.1, max_backoff: float = 30.0
    ) -> None:
        self.worker = worker
        self.sink = sink
        self.last = 0  # sequence number of the last batch applied; 0: none yet
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._ranks: dict[int | None, EngineLoad] = {}
        self._key = worker.url.url

    async def run(self) -> None:
        """Follow the stream until cancelled, or until the worker turns out not to publish events."""
        backoff = self.initial_backoff
        replay = False
        while True:
            applied_before = self.last
            try:
                replay = await self._follow(replay)
            except WorkerError as exc:
                if exc.status == UNIMPLEMENTED:
                    log.info("worker %s publishes no KV events; routing approximates its cache", self._key)
                    return
                log.info("KV event stream of %s failed: %s", self._key, exc.message)
                replay = False
            if self.last != applied_before:
                backoff = self.initial_backoff
            if replay:
                continue  # a gap: reconnect at once to have it replayed
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _follow(self, replay: bool) -> bool:
        """Read one connection; True when it stopped at a gap (reconnect at once to replay)."""
        first = True
        async with contextlib.aclosing(self.worker.client.kv_events(self.last)) as stream:
            async for batch in stream:
                if batch.load is not None:
                    self._take_load(batch)
                if batch.load_only:
                    continue
                seq = batch.sequence_number
                if not batch.snapshot and self.last:
                    if seq <= self.last and not (first and seq < self.last):
                        continue  # already applied
                    if seq < self.last:
                        # Below the cursor we resumed at: the worker restarted, what we know is stale.
                        log.info("worker %s restarted its KV events at %d", self._key, seq)
                        self.sink.forget(self._key)
                    elif seq > self.last + 1:
                        if not replay:
                            log.info("KV events of %s: gap after %d (got %d)", self._key, self.last, seq)
                            return True
                        # Replaying did not close the gap: the events in it are lost for good.
                        self.sink.forget(self._key)
                first = replay = False
                self._apply(batch)
        return False

    def _apply(self, batch: KvEventBatch) -> None:
        self.last = batch.sequence_number
        try:
            self.sink.apply(self._key, batch)
        except Exception:  # a bug in the index must not end the stream: start its state over
            log.exception("applying KV events of %s failed", self._key)
            self.sink.forget(self._key)

    def _take_load(self, batch: KvEventBatch) -> None:
        assert batch.load is not None
        self._ranks[batch.dp_rank] = batch.load
        self.worker.engine_load = summed(list(self._ranks.values()))
