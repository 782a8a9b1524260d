"""Retries before the first event, circuit breakers, exact load accounting, routing headers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from dataplane.errors import WorkerError
from dataplane.gateway import Gateway
from dataplane.types import Chunk, Event, Started, TextDelta, WireRequest, WorkerMessage
from tests.dataplane.gateways import EOS, chat, client, hello, started_gateway, until
from tests.fakes.worker import Script, complete


def failing(status: int) -> Script:
    def script(_: WireRequest) -> list[WorkerError]:
        return [WorkerError(f"failed with {status}", status=status)]

    return script


def loads(gw: Gateway) -> list[int]:
    return [w.load for w in gw.registry.all()]


@contextlib.asynccontextmanager
async def gateway(model_dir: Path, scripts: list[Script], **config: Any) -> AsyncGenerator[Gateway, None]:
    gw = await started_gateway(model_dir, scripts, **config)
    try:
        yield gw
    finally:
        await gw.stop()


async def test_retry_goes_to_another_worker_and_opens_the_breaker(model_dir: Path) -> None:
    async with gateway(model_dir, [failing(503), hello], cb_failure_threshold=1) as gw:
        done = await gw.collect(chat())
        assert done.choices[0].text == "Hello"
        assert [r.request_id for r in client(gw, 0).requests] == ["req-1"]
        assert [r.request_id for r in client(gw, 1).requests] == ["req-1-retry1"]
        first = gw.registry.all()[0]
        assert first.describe()["circuit_breaker"] == "open"
        assert gw.registry.routable(first.model_id) == (gw.registry.all()[1],)
        await gw.collect(chat())  # straight to the other worker: no attempt on the open one
        assert len(client(gw, 0).requests) == 1 and len(client(gw, 1).requests) == 2
        assert loads(gw) == [0, 0]


async def test_a_worker_failing_after_its_first_chunk_is_not_retried(model_dir: Path) -> None:
    def breaks(_: WireRequest) -> list[WorkerMessage | WorkerError]:
        return [Chunk(0, [9707], 3, 1, 0), WorkerError("worker died", status=503)]

    async with gateway(model_dir, [breaks, hello], cb_failure_threshold=1) as gw:
        events: list[Event] = []
        with pytest.raises(WorkerError, match="worker died"):
            async for event in gw.generate(chat()):
                events.append(event)
        assert [type(e) for e in events] == [Started, TextDelta]  # the client got these, then the error
        assert client(gw, 1).requests == []
        assert gw.registry.all()[0].breaker.state == "open"  # a failure nonetheless
        assert loads(gw) == [0, 0]


async def test_a_non_retryable_status_is_not_retried(model_dir: Path) -> None:
    async with gateway(model_dir, [failing(400), hello]) as gw:
        with pytest.raises(WorkerError) as caught:
            await gw.collect(chat())
        assert caught.value.status == 400
        assert client(gw, 1).requests == []
        assert gw.registry.all()[0].breaker.state == "closed"


@pytest.mark.parametrize(
    ("config", "attempts"), [({"retry_max_retries": 2}, 2), ({"disable_retries": True}, 1)]
)
async def test_attempts_are_bounded(model_dir: Path, config: dict[str, Any], attempts: int) -> None:
    async with gateway(model_dir, [failing(429)] * 3, **config) as gw:
        with pytest.raises(WorkerError) as caught:
            await gw.collect(chat())
        assert caught.value.status == 429
        assert sum(len(client(gw, i).requests) for i in range(3)) == attempts


async def test_retries_cycle_through_the_workers_then_give_the_last_error(model_dir: Path) -> None:
    async with gateway(model_dir, [failing(502), failing(504)]) as gw:
        with pytest.raises(WorkerError) as caught:
            await gw.collect(chat())
        assert [len(client(gw, i).requests) for i in (0, 1)] == [3, 2]  # alternating, 5 attempts
        assert caught.value.status == 502
        assert loads(gw) == [0, 0]


async def test_when_the_breaker_leaves_no_worker_the_workers_error_is_kept(model_dir: Path) -> None:
    async with gateway(model_dir, [failing(503)], cb_failure_threshold=1) as gw:
        with pytest.raises(WorkerError) as caught:  # not NoHealthyWorker: the client learns why
            await gw.collect(chat())
        assert caught.value.status == 503 and caught.value.message == "failed with 503"
        assert len(client(gw, 0).requests) == 1


async def test_an_open_breaker_lets_the_worker_back_after_its_timeout(model_dir: Path) -> None:
    async with gateway(
        model_dir, [failing(500), hello], cb_failure_threshold=1, cb_timeout_duration_secs=0.05
    ) as gw:
        first = gw.registry.all()[0]
        await gw.collect(chat())
        assert first.breaker.state == "open"
        await until(lambda: first in gw.registry.routable(first.model_id))
        assert first.breaker.state == "half_open"


# --- leases ------------------------------------------------------------------------------------------------


def stalled(gate: asyncio.Event, *, first_chunk: bool) -> Script:
    def script(_: WireRequest) -> list[WorkerMessage | asyncio.Event]:
        head: list[WorkerMessage | asyncio.Event] = [Chunk(0, [9707], 3, 1, 0)] if first_chunk else []
        return [*head, gate, complete([EOS], matched=EOS)]

    return script


@pytest.mark.parametrize(
    ("scripts", "outcome"),
    [
        ([hello, hello], "ok"),
        ([failing(400), hello], "error"),
        ([failing(503), hello], "ok"),  # retried
        ([failing(503), failing(500)], "error"),  # retries exhausted
        ([lambda _: [], hello], "ok"),  # a worker that ends without a word is retried
    ],
)
async def test_loads_return_to_zero_whatever_the_outcome(
    model_dir: Path, scripts: list[Script], outcome: str
) -> None:
    async with gateway(model_dir, scripts) as gw:
        try:
            await gw.collect(chat())
            assert outcome == "ok"
        except WorkerError:
            assert outcome == "error"
        assert loads(gw) == [0, 0]


@pytest.mark.parametrize("first_chunk", [True, False])
async def test_loads_return_to_zero_when_the_client_leaves(model_dir: Path, first_chunk: bool) -> None:
    gate = asyncio.Event()
    async with gateway(model_dir, [stalled(gate, first_chunk=first_chunk)]) as gw:
        stream = gw.generate(chat())
        reading = asyncio.create_task(anext(stream))
        if first_chunk:
            assert isinstance(await reading, Started)
        await until(lambda: loads(gw) == [1])
        if not first_chunk:
            reading.cancel()  # the client leaves while the worker is silent
            await asyncio.gather(reading, return_exceptions=True)
        await stream.aclose()
        assert loads(gw) == [0]
        await until(lambda: client(gw, 0).aborted == ["req-1"])
        assert gw.registry.all()[0].breaker.state == "closed"  # leaving is not the worker's failure


async def test_loads_return_to_zero_when_the_client_leaves_during_a_retry_backoff(model_dir: Path) -> None:
    async with gateway(model_dir, [failing(503), hello], retry_initial_backoff_ms=10_000) as gw:
        reading = asyncio.create_task(anext(gw.generate(chat())))
        await until(lambda: len(client(gw, 0).requests) == 1 and loads(gw) == [0, 0])
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        assert client(gw, 1).requests == [] and loads(gw) == [0, 0]


# --- routing headers ---------------------------------------------------------------------------------------


async def test_target_worker_header_pins_the_worker(model_dir: Path) -> None:
    async with gateway(model_dir, [hello, hello, hello], policy="consistent_hashing") as gw:
        for _ in range(3):
            await gw.collect(chat(target_worker="2"))
        assert [len(client(gw, i).requests) for i in range(3)] == [0, 0, 3]


async def test_routing_key_sticks_with_consistent_hashing(model_dir: Path) -> None:
    async with gateway(model_dir, [hello] * 4, policy="consistent_hashing") as gw:
        for _ in range(6):
            await gw.collect(chat(routing_key="user-42"))
        assert sorted(len(client(gw, i).requests) for i in range(4)) == [0, 0, 0, 6]


async def test_routing_key_override_makes_any_policy_sticky(model_dir: Path) -> None:
    async with gateway(model_dir, [hello, hello], routing_key_override=True) as gw:
        for _ in range(4):
            await gw.collect(chat(routing_key="session-1"))
        assert sorted(len(client(gw, i).requests) for i in (0, 1)) == [0, 4]
        for _ in range(4):
            await gw.collect(chat())  # without a key: round robin as configured
        assert sorted(len(client(gw, i).requests) for i in (0, 1)) == [2, 6]
