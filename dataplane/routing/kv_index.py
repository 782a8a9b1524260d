"""``KvIndex``: which blocks each worker's KV cache holds, from its ``SubscribeKvEvents`` stream.

Blocks are keyed by the gateway's own chained content hash (a block's tokens and its parent's hash), so
a request's prefix can be hashed the same way without trusting engines to agree on their hashes. The
engine's block hashes are kept only to translate removals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import assert_never

from dataplane.routing.ring import stable_hash, token_bytes
from dataplane.types import KvCleared, KvEventBatch, KvRemoved, KvStored

__all__ = ["KvIndex", "chain_hashes"]

_ROOT = 0


def chain_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """The chained hash of every full block of ``token_ids``: each covers the whole prefix up to it."""
    hashes, parent = [], _ROOT
    for i in range(0, len(token_ids) - block_size + 1, block_size):
        parent = _block_hash(parent, token_ids[i : i + block_size])
        hashes.append(parent)
    return hashes


def _block_hash(parent: int, token_ids: Sequence[int]) -> int:
    return stable_hash(parent.to_bytes(8, "little") + token_bytes(token_ids))


@dataclass(slots=True)
class _Worker:
    ranks: dict[int | None, dict[int, int]] = field(default_factory=dict)  # dp rank -> engine hash -> ours
    block_size: int | None = None
    blocks: int = 0
    resyncing: bool = False  # the last batch was a snapshot chunk


class KvIndex:
    """Per worker, the blocks it holds; ``score`` counts each worker's leading blocks of a prompt."""

    def __init__(self, block_size: int = 16) -> None:
        self._default_block_size = block_size
        self._workers: dict[str, _Worker] = {}
        self._holders: dict[int, dict[str, int]] = {}  # our hash -> worker id -> copies (dp ranks)

    def apply(self, worker_id: str, batch: KvEventBatch) -> None:
        if batch.load_only:
            return
        state = self._workers.get(worker_id)
        if batch.snapshot and state is not None and not state.resyncing:
            self.forget(worker_id)  # a snapshot restates everything: what we knew may be stale
            state = None
        if state is None:
            state = self._workers[worker_id] = _Worker()
        state.resyncing = batch.snapshot
        engine = state.ranks.setdefault(batch.dp_rank, {})
        for event in batch.events:
            match event:
                case KvStored():
                    self._stored(worker_id, state, engine, event)
                case KvRemoved():
                    for h in event.block_hashes:
                        ours = engine.pop(h, None)
                        if ours is not None:
                            self._release(worker_id, state, ours)
                case KvCleared():
                    cleared = state.ranks.values() if batch.dp_rank is None else [engine]
                    for rank in cleared:
                        for ours in rank.values():
                            self._release(worker_id, state, ours)
                        rank.clear()
                case _:
                    assert_never(event)

    def forget(self, worker_id: str) -> None:
        state = self._workers.pop(worker_id, None)
        if state is None:
            return
        for engine in state.ranks.values():
            for ours in engine.values():
                self._release(worker_id, state, ours)

    def has_events(self, worker_id: str) -> bool:
        """The worker's stream has told us its cache state (possibly empty)."""
        return worker_id in self._workers

    def blocks(self, worker_id: str) -> int:
        """Blocks the worker holds (counting each dp rank's copy)."""
        state = self._workers.get(worker_id)
        return state.blocks if state else 0

    def block_size(self, worker_id: str) -> int:
        """The worker's block size as learned from its events, else the configured one."""
        state = self._workers.get(worker_id)
        learned = state.block_size if state else None
        return learned or self._default_block_size

    def score(self, token_ids: Sequence[int]) -> dict[str, int]:
        """Per worker with any, the number of leading blocks of ``token_ids`` it holds.

        Cost is the prompt's hashing plus the holders of each matched block, not the number of workers.
        """
        sizes = {s.block_size for s in self._workers.values() if s.block_size} or {self._default_block_size}
        scores: dict[str, int] = {}
        for size in sizes:
            live: set[str] | None = None
            for depth, h in enumerate(chain_hashes(token_ids, size)):
                holders = self._holders.get(h, {})
                now = set(holders) if live is None else live.intersection(holders)
                for wid in (live or set()) - now:
                    scores[wid] = depth
                live = now
                if not live:
                    break
            else:
                for wid in live or set():
                    scores[wid] = len(token_ids) // size
        return scores

    def _stored(self, worker_id: str, state: _Worker, engine: dict[int, int], event: KvStored) -> None:
        if event.parent_block_hash is None:
            parent: int | None = _ROOT
        else:
            parent = engine.get(event.parent_block_hash)
        for block in event.blocks:
            if parent is None:
                return  # the chain's start was never reported: no prompt can reach these blocks
            state.block_size = state.block_size or len(block.token_ids)
            ours = _block_hash(parent, block.token_ids)
            if block.block_hash not in engine:
                engine[block.block_hash] = ours
                holders = self._holders.setdefault(ours, {})
                holders[worker_id] = holders.get(worker_id, 0) + 1
                state.blocks += 1
            parent = ours

    def _release(self, worker_id: str, state: _Worker, ours: int) -> None:
        state.blocks -= 1
        holders = self._holders[ours]
        left = holders[worker_id] - 1
        if left > 0:
            holders[worker_id] = left
        else:
            del holders[worker_id]
            if not holders:
                del self._holders[ours]
