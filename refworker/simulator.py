"""Realistic mode: a continuous-batching engine simulated on the event loop's clock.

One task runs scheduler steps while there is work and waits on an event when there is none, so an idle
worker costs nothing. A step admits waiting requests (FIFO, up to ``max_running``, while the KV cache can
hold their uncached prompt and their whole output, evicting unused cached blocks), prefills up to
``prefill_chunk`` uncached prompt tokens and decodes one token for every running sequence; it lasts
``prefill tokens / prefill_tps + decode_base_ms + decode_per_req_ms x sequences decoding``. A request's
prompt blocks are cached when its prefill ends (its first token), its output blocks when it finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from refworker.config import WorkerConfig
from refworker.kv_cache import KvCache
from refworker.kv_events import KvEventLog
from refworker.loads import Counters, LoadFigures

State = int
WAITING, RUNNING, DONE = 0, 1, 2


class Ticket:
    """One request inside the simulator; the serving side reads ``cached`` and waits on ``reached``."""

    __slots__ = (
        "cached",
        "generated",
        "hashes",
        "n",
        "need",
        "output_ids",
        "pinned",
        "prefill_left",
        "prefilled",
        "prompt_ids",
        "reserved",
        "state",
        "uncached",
        "wake",
    )

    def __init__(
        self,
        prompt_ids: list[int],
        output_ids: list[int],
        n: int,
        hashes: list[int],
        wake: Callable[[], None],
    ) -> None:
        self.prompt_ids = prompt_ids
        self.output_ids = output_ids
        self.n = n
        self.hashes = hashes
        self.wake = wake
        self.state: State = WAITING
        self.cached = 0
        self.uncached = len(prompt_ids)  # estimate while waiting
        self.pinned: list[int] = []
        self.reserved = 0
        self.prefill_left = 0
        self.prefilled = False
        self.generated = 0
        self.need = 0  # the serving side waits for this many tokens

    def reached(self, tokens: int) -> bool:
        return self.prefilled and self.generated >= tokens

    @property
    def length(self) -> int:
        return len(self.output_ids)

    def used_tokens(self, block_size: int) -> int:
        """KV tokens held outside cached blocks: the prompt until prefilled, then its tail and the output."""
        if not self.prefilled:
            return len(self.prompt_ids) - self.cached
        return len(self.prompt_ids) - len(self.hashes) * block_size + self.n * self.generated


class Simulator:
    def __init__(
        self,
        config: WorkerConfig,
        cache: KvCache,
        events: KvEventLog,
        counters: Counters,
        on_load_change: Callable[[], None],
    ) -> None:
        self.config = config
        self.cache = cache
        self.events = events
        self.counters = counters
        self.on_load_change = on_load_change
        self.waiting: deque[Ticket] = deque()
        self.running: list[Ticket] = []
        self.reserved = 0  # KV tokens promised to running requests beyond their cached blocks
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def fits(self, prompt_tokens: int, output_tokens: int) -> bool:
        return prompt_tokens + output_tokens <= self.cache.capacity_blocks * self.cache.block_size

    def submit(
        self, prompt_ids: list[int], output_ids: list[int], n: int, wake: Callable[[], None]
    ) -> Ticket:
        cache = self.cache
        hashes = cache.hashes(prompt_ids)
        ticket = Ticket(prompt_ids, output_ids, n, hashes, wake)
        ticket.uncached = len(prompt_ids) - cache.match(hashes) * cache.block_size
        self.waiting.append(ticket)
        self._work.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="refworker-simulator")
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """The request ended early (abort, client gone): free whatever it holds."""
        if ticket.state == WAITING:
            self.waiting.remove(ticket)
        elif ticket.state == RUNNING:
            self.running.remove(ticket)
            self._release(ticket)
        ticket.state = DONE

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def load(self) -> LoadFigures:
        size = self.cache.block_size
        used = self.cache.pinned_blocks * size + sum(t.used_tokens(size) for t in self.running)
        pending = sum(len(t.prompt_ids) for t in self.waiting)
        pending += sum(len(t.prompt_ids) for t in self.running if not t.prefilled)
        return LoadFigures(
            running_requests=len(self.running),
            waiting_requests=len(self.waiting),
            waiting_uncached_tokens=sum(t.uncached for t in self.waiting),
            used_tokens=used,
            max_total_tokens=self.config.kv_tokens,
            gen_throughput=self.counters.throughput(),
            cache_hit_rate=self.counters.hit_rate(),
            max_running_requests=self.config.max_running,
            prefill_pending_tokens=pending,
        )

    # -- the scheduler loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        config = self.config
        while True:
            if not self.waiting and not self.running:
                self._work.clear()
                await self._work.wait()
                continue
            admitted = self._admit()
            if not self.running:  # cannot happen: a lone request always fits (checked at submit)
                self._work.clear()
                await self._work.wait()
                continue
            budget = config.prefill_chunk
            prefill: list[tuple[Ticket, int]] = []
            for ticket in self.running:
                if budget and ticket.prefill_left:
                    take = min(ticket.prefill_left, budget)
                    prefill.append((ticket, take))
                    budget -= take
            decoding = [t for t in self.running if t.prefilled and t.generated < t.length]
            sequences = sum(t.n for t in decoding)
            seconds = (config.prefill_chunk - budget) / config.prefill_tps
            if sequences:
                seconds += (config.decode_base_ms + config.decode_per_req_ms * sequences) / 1000
            self.events.flush()  # evictions made room for the admitted requests
            if admitted:
                self.on_load_change()
            await asyncio.sleep(seconds)
            self._advance(prefill, decoding)

    def _admit(self) -> bool:
        cache = self.cache
        size = cache.block_size
        admitted = False
        while self.waiting and len(self.running) < self.config.max_running:
            ticket = self.waiting[0]
            found = cache.match(ticket.hashes)
            cache.acquire(ticket.hashes[:found])
            cached = found * size
            need = len(ticket.prompt_ids) - cached + ticket.n * ticket.length
            short = need - (cache.capacity_blocks - len(cache)) * size + self.reserved
            if short > 0 and cache.evict(-(-short // size)) * size < short:
                cache.release(ticket.hashes[:found])
                break  # head-of-line: it waits for running requests to finish
            self.waiting.popleft()
            ticket.state = RUNNING
            ticket.cached = cached
            ticket.pinned = ticket.hashes[:found]
            ticket.reserved = need
            self.reserved += need
            ticket.prefill_left = max(len(ticket.prompt_ids) - cached, 1)  # the last token is computed
            self.counters.prompt(len(ticket.prompt_ids), cached)
            self.running.append(ticket)
            admitted = True
        return admitted

    def _advance(self, prefill: list[tuple[Ticket, int]], decoding: list[Ticket]) -> None:
        produced = 0
        for ticket in decoding:
            if ticket.state == RUNNING:
                ticket.generated += 1
                produced += ticket.n
        for ticket, take in prefill:
            if ticket.state != RUNNING:
                continue
            ticket.prefill_left -= take
            if not ticket.prefill_left:
                self._prefilled(ticket)
                if ticket.length:
                    ticket.generated = 1
                    produced += ticket.n
        finished = False
        for ticket in list(self.running):
            if ticket.prefilled and ticket.generated >= ticket.need:
                ticket.wake()
            if ticket.prefilled and ticket.generated >= ticket.length:
                self.running.remove(ticket)
                self._finish(ticket)
                finished = True
        self.counters.generated(produced)
        self.events.flush()
        if finished:
            self.on_load_change()

    def _prefilled(self, ticket: Ticket) -> None:
        cache = self.cache
        start = len(ticket.pinned)
        cache.store(ticket.prompt_ids, ticket.hashes, start, pin=True)
        converted = (len(ticket.hashes) - start) * cache.block_size
        ticket.reserved -= converted
        self.reserved -= converted
        ticket.pinned = ticket.hashes
        ticket.prefilled = True

    def _finish(self, ticket: Ticket) -> None:
        cache = self.cache
        if ticket.n == 1 and ticket.length > 1:
            # As a radix cache does: the output joins the cache, all but its last token (never computed).
            ids = ticket.prompt_ids + ticket.output_ids[:-1]
            hashes = ticket.hashes
            parent = hashes[-1] if hashes else 0
            hashes = hashes + cache.hashes(ids, len(hashes), parent)
            new = cache.store(ids, hashes, len(ticket.hashes), pin=False)
            converted = min(new * cache.block_size, ticket.reserved)
            ticket.reserved -= converted
            self.reserved -= converted
        self._release(ticket)
        ticket.state = DONE

    def _release(self, ticket: Ticket) -> None:
        self.cache.release(ticket.pinned)
        ticket.pinned = []
        self.reserved -= ticket.reserved
        ticket.reserved = 0
