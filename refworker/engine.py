"""The simulated engine behind both wire formats: plans requests, tracks live ones, handles aborts."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from refworker.config import WorkerConfig
from refworker.constraints import Constrainer, ConstraintError
from refworker.directives import NO_DIRECTIVES, DirectiveError, Directives, parse_directives
from refworker.kv_cache import KvCache
from refworker.kv_events import KvEventLog
from refworker.loads import Counters, LoadFigures
from refworker.model import ModelFiles
from refworker.plan import Choice, Step, Timing, generate_ids, schedule
from refworker.record import Record
from refworker.scripts import DEFAULT_TOOL, ScriptBook
from refworker.simulator import DONE, Simulator, Ticket

# The default mode's nominal KV size (GetLoads) and its prefix cache's size in blocks.
MAX_TOTAL_TOKENS = 1_000_000
DEFAULT_CACHE_BLOCKS = 200_000
# chunk=random with --tokens-per-chunk 1 would be all ones; random sizes then go up to this.
DEFAULT_RANDOM_CHUNK = 8
MAX_N = 1024
CONSTRAINT_CACHE = 256  # constrained outputs kept, by constraint


class RequestRejected(Exception):
    """The engine refuses a request; ``status`` is a gRPC status name (HTTP maps it)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """The wire-neutral part of a generate request."""

    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int | None = None
    min_new_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    n: int = 1
    stream: bool = True
    # What a constraint allows (``constrained_ids``); None: the script's output.
    output_ids: list[int] | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    request_id: str
    prompt_ids: list[int]
    cached_tokens: int
    choices: list[Choice]
    steps: list[Step]
    fail_after: int | None
    stall: bool

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


class Live:
    """A running request: the handle Abort reaches, an abortable pause, its simulator ticket if any."""

    __slots__ = (
        "_cached_tokens",
        "aborted",
        "output_tokens",
        "reason",
        "request_id",
        "ticket",
        "tokens",
        "waiter",
    )

    def __init__(self, request_id: str, tokens: int, output_tokens: int, cached_tokens: int) -> None:
        self.request_id = request_id
        self.tokens = tokens
        self.output_tokens = output_tokens
        self._cached_tokens = cached_tokens
        self.aborted = False
        self.reason = ""
        self.waiter: asyncio.Future[None] | None = None
        self.ticket: Ticket | None = None

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the prefix cache (in realistic mode: known once admitted)."""
        return self._cached_tokens if self.ticket is None else self.ticket.cached

    def abort(self, reason: str) -> None:
        self.aborted = True
        self.reason = reason
        self.wake()

    def wake(self) -> None:
        """End the current pause early."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def until(self, deadline: float, tokens: int) -> None:
        """Wait until a step may be sent: its time (loop clock) comes, or in realistic mode its tokens
        exist; an abort ends the wait early."""
        ticket = self.ticket
        if ticket is None:
            if (delay := deadline - asyncio.get_running_loop().time()) > 0:
                await self.pause(delay)
            return
        while not ticket.reached(tokens) and not self.aborted:
            ticket.need = tokens
            await self.pause(None)

    async def pause(self, delay: float | None) -> None:
        """Sleep ``delay`` seconds (``None``: until aborted); an abort ends the pause early."""
        if self.aborted:
            return
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(delay, _wake, waiter) if delay is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Engine:
    def __init__(self, config: WorkerConfig, model: ModelFiles) -> None:
        self.config = config
        self.model = model
        self.eos_token_ids = config.eos_token_ids or model.eos_token_ids
        self.scripts = ScriptBook(model.tokenizer)
        self.events = KvEventLog(config.kv_event_history)
        self.counters = Counters()
        capacity = config.kv_tokens if config.realistic else DEFAULT_CACHE_BLOCKS * config.block_size
        self.cache = KvCache(capacity, config.block_size, self.events)
        self.simulator = (
            Simulator(config, self.cache, self.events, self.counters, self.events.load_changed)
            if config.realistic
            else None
        )
        self.record = Record()
        self.constrainer = Constrainer(model.tokenizer)
        self._constrained: OrderedDict[tuple[str, str], asyncio.Future[list[int]]] = OrderedDict()
        self.live: dict[str, Live] = {}
        self.started_at = time.time()
        self.total_requests = 0
        self._changed: asyncio.Event | None = None

    def directives(self, prompt_ids: list[int]) -> Directives:
        if self.model.bracket_token_ids.isdisjoint(prompt_ids):
            return NO_DIRECTIVES
        text = self.model.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        try:
            return parse_directives(text)
        except DirectiveError as exc:
            raise RequestRejected("INVALID_ARGUMENT", str(exc)) from None

    def plan(self, request: GenerationRequest) -> Plan:
        """Everything the request will produce; raises ``RequestRejected`` (also for injected failures)."""
        if not request.prompt_ids:
            raise RequestRejected("INVALID_ARGUMENT", "tokenized.input_ids must not be empty")
        if not 0 <= request.n <= MAX_N:
            raise RequestRejected("INVALID_ARGUMENT", f"n must be at most {MAX_N}")
        directives = self.directives(request.prompt_ids)
        if directives.fail is not None:
            raise RequestRejected(directives.fail, "injected failure")
        config = self.config
        max_new = config.default_max_new_tokens if request.max_new_tokens is None else request.max_new_tokens
        self._check_context(len(request.prompt_ids), max_new)
        filler_tokens = config.filler_tokens if directives.tokens is None else directives.tokens
        script_ids = request.output_ids
        if script_ids is None:
            script_ids = self.scripts.ids(
                directives.script or config.script,
                request.prompt_ids,
                directives.tool or DEFAULT_TOOL,
                min(filler_tokens, max_new),  # more could never be sent; a huge `tokens=` costs nothing
            )
        ids, finish, matched = generate_ids(
            script_ids,
            eos_ids=self.eos_token_ids,
            stop_token_ids=request.stop_token_ids,
            ignore_eos=request.ignore_eos,
            min_new_tokens=request.min_new_tokens,
            max_new_tokens=max_new,
            filler=self.scripts.filler,
        )
        n = max(request.n, 1)
        choices = [Choice(i, ids, finish, matched) for i in range(n)]
        if self.simulator is None:
            cached = self.cache.lookup_and_insert(request.prompt_ids)
            self.events.flush()
            self.counters.prompt(len(request.prompt_ids), cached)
        elif self.simulator.fits(len(request.prompt_ids), n * len(ids)):
            cached = 0  # known when the simulator admits the request
        else:
            raise RequestRejected(
                "RESOURCE_EXHAUSTED",
                f"{len(request.prompt_ids)} prompt and {n * len(ids)} output tokens exceed the KV cache "
                f"({self.config.kv_tokens} tokens)",
            )
        steps = schedule(choices, self._timing(request, directives, cached), request.stream)
        return Plan(
            request_id=request.request_id,
            prompt_ids=request.prompt_ids,
            cached_tokens=cached,
            choices=choices,
            steps=steps,
            fail_after=directives.fail_after,
            stall=directives.stall,
        )

    async def constrained_ids(self, kind: str, value: str) -> list[int]:
        """The output a constraint allows (``refworker.constraints``): computed off the event loop once
        per constraint (building an index can take seconds), then cached; ``RequestRejected`` when the
        constraint cannot be served."""
        key = (kind, value)
        future = self._constrained.get(key)
        if future is None:
            work = asyncio.to_thread(self.constrainer.output_ids, kind, value)
            future = self._constrained[key] = asyncio.ensure_future(work)
            while len(self._constrained) > CONSTRAINT_CACHE:
                self._constrained.popitem(last=False)
        else:
            self._constrained.move_to_end(key)
        try:
            return await asyncio.shield(future)
        except ConstraintError as exc:
            raise RequestRejected(exc.status, exc.message) from None

    def _check_context(self, prompt_tokens: int, max_new_tokens: int) -> None:
        # SGLang's checks (tokenizer_manager._validate_one_request); they also bound our memory.
        limit = self.model.max_context_length
        if prompt_tokens >= limit:
            raise RequestRejected(
                "INVALID_ARGUMENT",
                f"The input ({prompt_tokens} tokens) is longer than the model's context length "
                f"({limit} tokens).",
            )
        if prompt_tokens + max_new_tokens > limit:
            raise RequestRejected(
                "INVALID_ARGUMENT",
                f"Requested token count exceeds the model's maximum context length of {limit} tokens. "
                f"You requested a total of {prompt_tokens + max_new_tokens} tokens: {prompt_tokens} tokens "
                f"from the input messages and {max_new_tokens} tokens for the completion.",
            )

    def _timing(self, request: GenerationRequest, directives: Directives, cached: int) -> Timing:
        config = self.config
        ttft_ms = config.ttft_ms if directives.ttft_ms is None else directives.ttft_ms
        ttft_ms += config.prefill_ms_per_1k * (len(request.prompt_ids) - cached) / 1000
        itl_ms = config.itl_ms if directives.itl_ms is None else directives.itl_ms
        chunk = directives.chunk or config.tokens_per_chunk
        random_chunk = directives.random_chunk or (config.random_chunking and directives.chunk is None)
        if directives.random_chunk and chunk == 1:
            chunk = DEFAULT_RANDOM_CHUNK
        seed = directives.seed if directives.seed is not None else zlib.crc32(request.request_id.encode())
        return Timing(ttft_ms / 1000, itl_ms / 1000, chunk, random_chunk, seed)

    def begin(self, plan: Plan) -> Live:
        output = plan.choices[0].ids
        generated = len(output) * len(plan.choices)
        live = Live(plan.request_id, plan.prompt_tokens + generated, generated, plan.cached_tokens)
        if self.simulator is not None:
            live.ticket = self.simulator.submit(plan.prompt_ids, output, len(plan.choices), live.wake)
        self.live[plan.request_id] = live
        self.total_requests += 1
        self.events.load_changed()
        if self._changed is not None:
            self._notify()
        return live

    def finish(self, live: Live) -> None:
        if self.live.get(live.request_id) is live:
            del self.live[live.request_id]
        if live.ticket is not None:
            if live.ticket.state != DONE:
                assert self.simulator is not None
                self.simulator.cancel(live.ticket)
        else:
            self.counters.generated(live.output_tokens)
        self.events.load_changed()
        if self._changed is not None:
            self._notify()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Test seam: re-check ``predicate`` whenever a request starts or finishes, until it holds."""
        while not predicate():
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def _notify(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = None

    def abort(self, request_id: str, reason: str) -> bool:
        live = self.live.get(request_id)
        self.record.abort(request_id, reason, found=live is not None)
        if live is None:
            return False
        live.abort(reason)
        return True

    @property
    def max_total_tokens(self) -> int:
        return self.config.kv_tokens if self.simulator is not None else MAX_TOTAL_TOKENS

    def load(self) -> LoadFigures:
        if self.simulator is not None:
            return self.simulator.load()
        running = len(self.live)
        return LoadFigures(
            running_requests=running,
            waiting_requests=0,
            waiting_uncached_tokens=0,
            used_tokens=sum(live.tokens for live in self.live.values()),
            max_total_tokens=self.max_total_tokens,
            gen_throughput=self.counters.throughput(),
            cache_hit_rate=self.counters.hit_rate(),
            max_running_requests=self.config.max_running,
            prefill_pending_tokens=0,
        )

    def flush_cache(self) -> bool:
        """Drop the prefix cache (a cleared KV event); refused while requests run."""
        if self.live:
            return False
        self.cache.clear()
        self.events.flush()
        return True

    async def close(self) -> None:
        if self.simulator is not None:
            await self.simulator.close()
