"""The KV event log behind ``SubscribeKvEvents``: numbered batches, a bounded history, subscriptions.

Cache changes collect until ``flush()`` (once per scheduler step, or per request in the default mode)
turns them into one batch numbered from 1. Every subscription gets every batch after the point it joined.

Where a subscription starts (``SubscribeKvEventsRequest.start_sequence_number`` N, publisher at S):

- the history holds every batch after N (0 < N <= S, or N = 0 while the history reaches back to batch
  1): those batches are replayed, then live ones follow, with no gap and no duplicate;
- otherwise (the history no longer reaches N + 1, or N > S: a cursor from before a restart) a snapshot:
  ``count`` chunks numbered S - count + 1 .. S, chunk 0 opening with a cleared event, then stored events
  for every cached block, parents before children, event ids 0 (``KvSnapshotChunk`` in common.proto).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice

# Blocks per snapshot chunk.
SNAPSHOT_CHUNK_BLOCKS = 1024
# Batches a subscriber may have unsent before it is cut off (it resumes from its cursor).
MAX_PENDING = 10_000
# Load-only records: at most one per this many seconds per stream, and one at least this often.
LOAD_RECORD_GAP_S = 0.02
HEARTBEAT_S = 1.0

LiveBlocks = Callable[[], Iterable[tuple[int, int | None, bytes]]]


@dataclass(frozen=True, slots=True)
class Stored:
    event_id: int
    parent: int | None
    blocks: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Removed:
    event_id: int
    hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Cleared:
    event_id: int


Event = Stored | Removed | Cleared


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    index: int
    count: int
    blocks: int


@dataclass(frozen=True, slots=True)
class Batch:
    sequence: int
    timestamp: float
    events: tuple[Event, ...]
    snapshot: SnapshotChunk | None = None


class Subscription:
    """One stream's queue; ``cursor`` is the last sequence it has been given (0: none yet)."""

    def __init__(self, cursor: int, initial: list[Batch]) -> None:
        self.cursor = cursor
        self.queue: deque[Batch] = deque(initial)
        self.overflowed = False
        self.load_changed = False
        self.first_record = True
        self._wake = asyncio.Event()
        self._last_load = float("-inf")
        self._last_sent = asyncio.get_running_loop().time()

    def push(self, batch: Batch) -> None:
        if len(self.queue) >= MAX_PENDING:
            self.overflowed = True
        else:
            self.queue.append(batch)
        self._wake.set()

    def notify_load(self) -> None:
        self.load_changed = True
        self._wake.set()

    def sent(self, batch: Batch | None) -> None:
        """The stream wrote ``batch`` (``None``: a load-only record)."""
        now = asyncio.get_running_loop().time()
        self._last_sent = now
        self.first_record = False
        if batch is None:
            self._last_load = now
            self.load_changed = False
        else:
            self.cursor = batch.sequence

    async def next(self) -> Batch | None:
        """The next batch, or ``None`` when a load-only record is due (the load changed, or heartbeat)."""
        loop = asyncio.get_running_loop()
        while True:
            if self.queue or self.overflowed:
                return self.queue.popleft() if self.queue else None
            now = loop.time()
            due = self._last_sent + HEARTBEAT_S
            if self.load_changed:
                due = min(due, self._last_load + LOAD_RECORD_GAP_S)
            if now >= due:
                return None
            self._wake.clear()
            try:
                async with asyncio.timeout(due - now):
                    await self._wake.wait()
            except TimeoutError:
                pass


class KvEventLog:
    """Numbered batches of cache events, the last ``history`` of them kept for resuming subscribers."""

    def __init__(self, history: int) -> None:
        self.sequence = 0
        self._event_id = 0
        self._pending: list[Event] = []
        self._history: deque[Batch] = deque(maxlen=history)
        self._subscriptions: set[Subscription] = set()

    # -- the cache's sink -------------------------------------------------------------------------------

    def stored(self, parent: int | None, blocks: list[tuple[int, bytes]]) -> None:
        self._pending.append(Stored(self._next_id(), parent, tuple(blocks)))

    def removed(self, hashes: list[int]) -> None:
        self._pending.append(Removed(self._next_id(), tuple(hashes)))

    def cleared(self) -> None:
        self._pending.append(Cleared(self._next_id()))

    def _next_id(self) -> int:
        self._event_id += 1
        return self._event_id

    # -- publishing -------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Publish the events collected since the last flush as one batch (nothing if there are none)."""
        if not self._pending:
            return
        self.sequence += 1
        batch = Batch(self.sequence, time.time(), tuple(self._pending))
        self._pending = []
        self._history.append(batch)
        for subscription in self._subscriptions:
            subscription.push(batch)

    def load_changed(self) -> None:
        for subscription in self._subscriptions:
            subscription.notify_load()

    # -- subscribing ------------------------------------------------------------------------------------

    def subscribe(self, start: int, live_blocks: LiveBlocks) -> Subscription:
        """A subscription starting after ``start`` (see the module docstring); ``unsubscribe`` it after."""
        self.flush()
        history = self._history
        first = history[0].sequence if history else self.sequence + 1
        if start <= self.sequence and start + 1 >= first:  # the history holds every batch after start
            replay = list(islice(history, max(start + 1 - first, 0), None))
            subscription = Subscription(start, replay)
        else:
            if self.sequence == 0:
                # A stale cursor and nothing published yet: publish the (empty) state to number it.
                self.cleared()
                self.flush()
            subscription = Subscription(0, self._snapshot(live_blocks))
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def _snapshot(self, live_blocks: LiveBlocks) -> list[Batch]:
        blocks = list(live_blocks())
        count = max(1, min(-(-len(blocks) // SNAPSHOT_CHUNK_BLOCKS), self.sequence))
        per_chunk = -(-len(blocks) // count) if blocks else 0
        now = time.time()
        chunks = []
        for index in range(count):
            part = blocks[index * per_chunk : (index + 1) * per_chunk]
            events: list[Event] = [Cleared(0)] if index == 0 else []
            events += _chains(part)
            chunk = SnapshotChunk(index, count, len(blocks))
            chunks.append(Batch(self.sequence - count + 1 + index, now, tuple(events), chunk))
        return chunks


def _chains(blocks: list[tuple[int, int | None, bytes]]) -> list[Event]:
    """Stored events for ``blocks`` (parents first): one per run of blocks each the child of the last."""
    events: list[Event] = []
    run: list[tuple[int, bytes]] = []
    parent: int | None = None
    for block_hash, block_parent, tokens in blocks:
        if run and block_parent == run[-1][0]:
            run.append((block_hash, tokens))
            continue
        if run:
            events.append(Stored(0, parent, tuple(run)))
        run, parent = [(block_hash, tokens)], block_parent
    if run:
        events.append(Stored(0, parent, tuple(run)))
    return events
