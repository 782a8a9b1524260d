"""``cache_aware``: follow the prefix cache while the fleet is balanced, the least-loaded worker when not.

SMG's algorithm (smg-behavior.md §3.1) with one change, from pitfalls.md: instead of a hard switch from
"best match" to "least loaded", a cache hit is weighed against the extra load it would join. A worker's
score is ``match_rate − (load − min_load) / gap``, where ``gap`` is the load spread at which SMG's
imbalance check trips (``max(balance_abs_threshold, (balance_rel_threshold − 1) × min_load)``): a full
match is worth a whole ``gap`` of queue, a half match half of it. A hot prefix therefore spills to a
less-loaded worker well before the fleet is imbalanced, that worker becomes a second holder of the prefix,
and further requests alternate between the holders instead of piling onto the first one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dataplane.config import PolicyConfig
from dataplane.routing.base import KvEventSink, RouteRequest
from dataplane.routing.candidates import worker_id
from dataplane.routing.kv_index import KvIndex
from dataplane.routing.radix import Key, RadixTree, pages
from dataplane.workers import Worker

__all__ = ["CacheAware"]


@dataclass(slots=True)
class _Scan:
    """What one pass over the candidates learns."""

    least: Worker  # fewest requests in flight; ties: fewest picks, then first
    min_load: int
    max_load: int
    min_usage: float | None  # engine KV usage, over the workers that report it
    max_usage: float | None
    events: bool  # some candidate streams KV events


class CacheAware:
    """Cache-aware routing over per-model approximate trees, or the workers' KV events when they stream."""

    name = "cache_aware"
    needs_loads = True

    def __init__(self, config: PolicyConfig | None = None, *, clock: Callable[[], float] = time.monotonic):
        self._config = config or PolicyConfig()
        self._clock = clock
        self.index = KvIndex(self._config.block_size)
        self.kv_events: KvEventSink | None = self.index
        self._token_trees: dict[str, RadixTree] = {}
        self._text_trees: dict[str, RadixTree] = {}
        self._picked: dict[str, int] = {}
        self._members: dict[str, Sequence[Worker]] = {}
        self._last_seen: dict[str, float] = {}  # worker id -> last time it was a candidate

    def select(self, request: RouteRequest, workers: Sequence[Worker]) -> Worker | None:
        now = self._clock()
        self._note_members(request.model_id, workers, now)
        scan = self._scan(workers)
        if self._imbalanced(scan):
            chosen = scan.least
            if not (request.token_ids is not None and scan.events):
                self._remember(request, chosen, now)
        elif request.token_ids is not None and scan.events:
            chosen = self._by_events(request.token_ids, workers, scan)
        else:
            chosen = self._by_tree(request, workers, scan, now)
        wid = worker_id(chosen)
        self._picked[wid] = self._picked.get(wid, 0) + 1
        return chosen

    def maintain(self, now: float) -> None:
        """Evict trees to ``max_tree_size`` per worker; forget workers absent for ``max_idle_secs``."""
        horizon = now - self._config.max_idle_secs
        self._last_seen = {wid: t for wid, t in self._last_seen.items() if t >= horizon}
        self._picked = {wid: n for wid, n in self._picked.items() if wid in self._last_seen}
        self._members.clear()  # the next request of each model refreshes its workers' last_seen
        for trees in (self._token_trees, self._text_trees):
            for model, tree in list(trees.items()):
                tree.retain(self._last_seen.keys())
                tree.evict(self._config.max_tree_size)
                if not tree.tenants():
                    del trees[model]

    def tree(self, model_id: str, *, tokens: bool) -> RadixTree | None:
        """The model's approximate tree (token pages or text), if it has one."""
        return (self._token_trees if tokens else self._text_trees).get(model_id)

    def _note_members(self, model_id: str, workers: Sequence[Worker], now: float) -> None:
        if self._members.get(model_id) is not workers:
            self._members[model_id] = workers
            for w in workers:
                self._last_seen[worker_id(w)] = now

    def _scan(self, workers: Sequence[Worker]) -> _Scan:
        picked, index = self._picked, self.index
        least = workers[0]
        least_key = (least.load, picked.get(worker_id(least), 0))
        lo = hi = least.load
        usage_lo: float | None = None
        usage_hi: float | None = None
        events = False
        for w in workers:
            wid = worker_id(w)
            key = (w.load, picked.get(wid, 0))
            if key < least_key:
                least, least_key = w, key
            lo, hi = min(lo, w.load), max(hi, w.load)
            if w.engine_load is not None:
                u = w.engine_load.token_usage
                usage_lo = u if usage_lo is None else min(usage_lo, u)
                usage_hi = u if usage_hi is None else max(usage_hi, u)
            events = events or index.has_events(wid)
        return _Scan(least, lo, hi, usage_lo, usage_hi, events)

    def _imbalanced(self, scan: _Scan) -> bool:
        c = self._config
        if scan.max_usage is not None and scan.min_usage is not None:
            if scan.max_usage > c.overload_token_usage_threshold:
                return True
            if scan.max_usage - scan.min_usage > c.balance_token_usage_threshold:
                return True
        spread = scan.max_load - scan.min_load
        return spread > c.balance_abs_threshold and scan.max_load > c.balance_rel_threshold * scan.min_load

    def _by_events(self, token_ids: Sequence[int], workers: Sequence[Worker], scan: _Scan) -> Worker:
        blocks = self.index.score(token_ids)
        rates = {wid: n * self.index.block_size(wid) / len(token_ids) for wid, n in blocks.items() if n}
        return self._best(rates, workers, scan, tree_size=self.index.blocks)

    def _by_tree(self, request: RouteRequest, workers: Sequence[Worker], scan: _Scan, now: float) -> Worker:
        tree, key, total = self._tree_key(request)
        if not key:
            return scan.least
        match = tree.match(key)
        held = match.tenants(longer_than=self._config.cache_threshold * total)
        chosen = self._best({t: n / total for t, n in held.items()}, workers, scan)
        tree.insert(match, worker_id(chosen), now)
        return chosen

    def _best(
        self,
        rates: Mapping[str, float],
        workers: Sequence[Worker],
        scan: _Scan,
        tree_size: Callable[[str], int] | None = None,
    ) -> Worker:
        """The highest ``rate − load penalty``; ties: lower load, smaller tree, fewer picks, first."""
        if not rates:
            return scan.least
        c = self._config
        gap = max(c.balance_abs_threshold, (c.balance_rel_threshold - 1) * scan.min_load, 1)

        def rank(w: Worker) -> tuple[float, int, int, int]:
            wid = worker_id(w)
            score = rates.get(wid, 0.0) - (w.load - scan.min_load) / gap
            size = tree_size(wid) if tree_size else 0
            return (-score, w.load, size, self._picked.get(wid, 0))

        best, best_rank = scan.least, rank(scan.least)
        for w in workers:
            if worker_id(w) in rates:
                r = rank(w)
                if r < best_rank:
                    best, best_rank = w, r
        return best

    def _remember(self, request: RouteRequest, worker: Worker, now: float) -> None:
        tree, key, _ = self._tree_key(request)
        if key:
            tree.insert(tree.match(key), worker_id(worker), now)

    def _tree_key(self, request: RouteRequest) -> tuple[RadixTree, Key, int]:
        """The model's tree for this request's kind, the request's key in it, and its length in units."""
        bs = self._config.block_size
        if request.token_ids is not None:
            trees, weight = self._token_trees, bs
            key: Key = pages(request.token_ids, bs)
            total = len(request.token_ids)
        else:
            trees, weight, key, total = self._text_trees, 1, request.text, len(request.text)
        tree = trees.get(request.model_id)
        if tree is None:
            tree = trees[request.model_id] = RadixTree(weight)
        return tree, key, total
