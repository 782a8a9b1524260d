"""End-to-end fixtures: real reference-worker processes, the gateway served on loopback, clients.

The gateway runs in-process exactly as ``adapters.app.serve`` runs it (``AppRunner`` with handler
cancellation, a ``TCPSite``), but on its own event loop in a thread: servers do not depend on
pytest-asyncio's loop scope, and a test that blocks (a sync gRPC read of a worker's record) never stalls
the gateway. Workers are ``python -m refworker`` processes; tests steer them with ``[ref …]`` directives
in the prompt and assert on their records (what the worker received, aborts, cancellations).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import openai
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from adapters.app import build_app
from adapters.context import GATEWAY
from dataplane.config import GatewayConfig, WorkerUrl
from tests.fakes.refworker_proc import RefWorkerProcs, read_record
from tests.scrape import Scrape

MODEL = "Qwen/Qwen3-0.6B"
EOS = 151645  # <|im_end|>, the chat EOS
READY_TIMEOUT = 20.0
CLIENT_TIMEOUT = 20.0
T = TypeVar("T")


class GatewayServer:
    """``build_app(config)`` behind an ``AppRunner`` + ``TCPSite`` on 127.0.0.1:0, in a thread."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="e2e-gateway", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        # As in adapters.app.serve: a disconnecting client cancels its handler.
        runner = web.AppRunner(
            build_app(self.config), handle_signals=False, handler_cancellation=True, access_log=None
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def metrics(self) -> Scrape:
        """The gateway's Prometheus registry, scraped as the listener serves it."""
        assert self._runner is not None
        return Scrape(generate_latest(self._runner.app[GATEWAY].metrics.registry).decode())

    def get_json(self, path: str) -> tuple[int, Any]:
        """A blocking GET for fixtures (tests use their own async clients)."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_ready(self, healthy: int, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``/readiness`` until ``healthy`` workers are registered and healthy."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body = self.get_json("/readiness")
            if status == 200 and body["healthy_workers"] == healthy:
                return
            time.sleep(0.02)
        raise TimeoutError(f"gateway not ready with {healthy} healthy workers: {body}")


@dataclass(frozen=True)
class Deployment:
    """A gateway and the worker processes behind it."""

    gateway: GatewayServer
    workers: list[tuple[str, int]]
    procs: RefWorkerProcs

    @property
    def url(self) -> str:
        return self.gateway.url

    def records(self) -> list[dict[str, Any]]:
        return [read_record(host, port) for host, port in self.workers]


def gateway_config(workers: Sequence[tuple[str, int]], model_dir: Path, **overrides: Any) -> GatewayConfig:
    # These tests count on requests alternating between workers; cache_aware has tests of its own.
    overrides.setdefault("policy", "round_robin")
    return GatewayConfig(
        worker_urls=tuple(WorkerUrl.parse(f"grpc://{host}:{port}") for host, port in workers),
        host="127.0.0.1",
        port=0,
        model_path=str(model_dir),
        **overrides,
    )


@contextlib.contextmanager
def deployment(count: int, model_dir: Path, *worker_args: str, **config: Any) -> Iterator[Deployment]:
    """``count`` reference workers and a gateway over them, ready (every worker healthy) on entry."""
    procs = RefWorkerProcs(count, *worker_args)
    workers = procs.start()
    try:
        gateway = GatewayServer(gateway_config(workers, model_dir, **config)).start()
        try:
            gateway.wait_ready(healthy=count)
            yield Deployment(gateway, workers, procs)
        finally:
            gateway.stop()
    finally:
        procs.stop()


@pytest.fixture(scope="session")
def shared(model_dir: Path) -> Iterator[Deployment]:
    """Two default workers (script ``fixed``, one token per chunk) behind a round-robin gateway.

    Tests inject failures into these workers on purpose, one after the other: their circuit breakers are
    off (breakers have deployments of their own), and retries wait 1 ms instead of 50 ms.
    """
    with deployment(2, model_dir, disable_circuit_breaker=True, retry_initial_backoff_ms=1.0) as d:
        yield d


@pytest.fixture(scope="session")
def chunky(model_dir: Path) -> Iterator[Deployment]:
    """One worker configured (not per request) to send random chunks of 1..5 tokens."""
    with deployment(1, model_dir, "--random-chunking", "--tokens-per-chunk", "5") as d:
        yield d


@pytest.fixture
async def client(shared: Deployment) -> AsyncIterator[openai.AsyncOpenAI]:
    async with api_client(shared) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as session:
        yield session


def api_client(d: Deployment, **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("timeout", CLIENT_TIMEOUT)
    return openai.AsyncOpenAI(base_url=f"{d.url}/v1", api_key="none", max_retries=0, **options)


def answer(reply: Any) -> dict[str, Any]:
    """What a client reads of a chat completion, without its ids and timestamps."""
    data: dict[str, Any] = reply.model_dump()
    for key in ("id", "created", "system_fingerprint"):
        data.pop(key, None)
    return data


async def drop_after_first_text(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], rid: str
) -> None:
    """Stream ``body`` to ``url`` as request ``rid``, read until the first generated text, then hang up."""
    reply = await http.post(url, json=body, headers={"x-request-id": rid})
    try:
        assert reply.status == 200
        while b'"content":"' not in (line := await reply.content.readline()) or b'"content":""' in line:
            assert line, "stream ended before any text"
    finally:
        reply.close()


def new_rid(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def extra(obj: Any, key: str) -> Any:
    """A non-OpenAI field (``matched_stop``, ``reasoning_content``) of an openai response object."""
    return (obj.model_extra or {}).get(key)


async def eventually(check: Callable[[], Awaitable[T] | T], timeout: float = 5.0) -> T:
    """Poll ``check`` until it returns something truthy; fail with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            assert value, f"condition not met within {timeout} s (last value: {value!r})"
            return value  # type: ignore[return-value]
        await asyncio.sleep(0.02)


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as reply:
        return reply.status, await reply.json(content_type=None)


async def wait_idle(http: aiohttp.ClientSession, d: Deployment) -> list[dict[str, Any]]:
    """Wait until ``/workers`` reports load 0 on every worker (leases are released asynchronously)."""

    async def idle() -> list[dict[str, Any]] | None:
        _, body = await get_json(http, f"{d.url}/workers")
        workers: list[dict[str, Any]] = body["workers"]
        return workers if all(w["load"] == 0 for w in workers) else None

    return await eventually(idle)


def dispatched_as(engine_id: str, request_id: str) -> bool:
    """Whether ``engine_id`` is a dispatch of the client's ``request_id`` (sent as x-request-id)."""
    return engine_id == request_id or engine_id.startswith(f"{request_id}-")


def find_request(d: Deployment, request_id: str) -> tuple[int, dict[str, Any]]:
    """(worker index, recorded GenerateRequest) of ``request_id`` in the workers' recent requests."""
    for i, record in enumerate(d.records()):
        for request in record["recent_requests"]:
            if dispatched_as(request.get("request_id", ""), request_id):
                return i, request
    raise AssertionError(f"no worker recorded request {request_id!r}")


async def sse_events(reply: aiohttp.ClientResponse) -> list[bytes]:
    """The raw body of an SSE reply split into events (each without its trailing blank line)."""
    body = await reply.read()
    assert body.endswith(b"\n\n"), body[-200:]
    return body[:-2].split(b"\n\n")


# ---- chat through the official client ------------------------------------------------------------


async def chat(client: openai.AsyncOpenAI, content: str, **kwargs: Any) -> Any:
    return await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kwargs
    )


async def chat_stream(client: openai.AsyncOpenAI, content: str, **kwargs: Any) -> list[Any]:
    stream = await chat(client, content, stream=True, **kwargs)
    return [chunk async for chunk in stream]


def streamed_text(chunks: list[Any], index: int = 0) -> str:
    return "".join(c.delta.content or "" for ch in chunks for c in ch.choices if c.index == index)


def finish(chunks: list[Any], index: int = 0) -> Any:
    """The choice that carries ``index``'s finish_reason (exactly one)."""
    finals = [c for ch in chunks for c in ch.choices if c.index == index and c.finish_reason is not None]
    assert len(finals) == 1, finals
    return finals[0]


def assert_clean_deltas(chunks: list[Any]) -> None:
    for ch in chunks:
        for c in ch.choices:
            assert "\ufffd" not in (c.delta.content or ""), ch
