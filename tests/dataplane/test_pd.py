"""PD disaggregation in the data plane, over in-memory workers: what each leg gets, and what a failure or
a client that leaves does to the other leg, the leases and the circuit breakers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from dataplane.config import GatewayConfig, WorkerUrl
from dataplane.errors import ConfigError, UnsupportedParameter, WorkerError
from dataplane.gateway import Gateway
from dataplane.types import Chunk, TextDelta, WireRequest, WorkerMessage
from tests.dataplane.gateways import EOS, Fleet, chat, hello, info, until, url
from tests.fakes.worker import FakeClient, Script, complete


def one_token(request: WireRequest) -> Sequence[WorkerMessage]:
    return [complete([9707], reason="length")]


async def pd_gateway(
    model_dir: Path, prefill: Script, decode: Script
) -> tuple[Gateway, FakeClient, FakeClient]:
    fleet = Fleet()
    p = fleet.add(0, prefill, info(model_dir))
    d = fleet.add(1, decode, info(model_dir))
    config = GatewayConfig(
        worker_urls=(),
        pd_disaggregation=True,
        prefill=((WorkerUrl.parse(url(0)), 7000),),
        decode=(WorkerUrl.parse(url(1)),),
        disable_health_check=True,
    )
    gateway = Gateway(config, client_factory=fleet)
    await gateway.start()
    await until(lambda: gateway.ready, timeout=10)
    return gateway, p, d


async def test_both_legs_get_the_same_request_and_room(model_dir: Path) -> None:
    gateway, prefill, decode = await pd_gateway(model_dir, one_token, hello)
    try:
        completion = await gateway.collect(chat())
        await until(lambda: prefill.requests and gateway.registry.get(
            WorkerUrl.parse(url(0)).worker_id).load == 0)  # fmt: skip
    finally:
        await gateway.stop()
    [p], [d] = prefill.requests, decode.requests
    assert p == d and p.bootstrap is not None
    assert (p.bootstrap.host, p.bootstrap.port) == ("127.0.0.1", 7000)
    assert completion.choices[0].text == "Hello"
    assert prefill.aborted == decode.aborted == []


async def test_a_failed_prefill_leg_goes_to_its_breaker_and_not_to_the_answer(model_dir: Path) -> None:
    def failing(request: WireRequest) -> Sequence[WorkerMessage | WorkerError]:
        return [WorkerError("prefill is down", status=503)]

    gateway, prefill, _ = await pd_gateway(model_dir, failing, hello)
    prefill_worker = gateway.registry.get(WorkerUrl.parse(url(0)).worker_id)
    assert prefill_worker is not None
    try:
        completion = await gateway.collect(chat())
        await until(lambda: prefill_worker.breaker.consecutive_failures == 1)
    finally:
        await gateway.stop()
    assert completion.choices[0].text == "Hello"
    assert prefill.aborted == []  # the worker ended its leg itself


async def test_a_failed_decode_leg_fails_the_request_and_aborts_the_prefill(model_dir: Path) -> None:
    hold, prefilling = asyncio.Event(), asyncio.Event()

    def slow_prefill(request: WireRequest) -> Sequence[WorkerMessage | asyncio.Event]:
        prefilling.set()
        return [hold, complete([9707], reason="length")]

    def failing(request: WireRequest) -> Sequence[WorkerError | asyncio.Event]:
        return [prefilling, WorkerError("decode is down", status=503)]  # once the prefill leg runs

    gateway, prefill, _ = await pd_gateway(model_dir, slow_prefill, failing)
    try:
        with pytest.raises(WorkerError, match="decode is down"):
            await gateway.collect(chat(request_id="pd-fail"))
        await until(lambda: prefill.aborted == ["pd-fail"])
        assert prefill.closed_early == ["pd-fail"]
        assert all(w.load == 0 for w in gateway.registry.all())
    finally:
        hold.set()
        await gateway.stop()


async def test_a_client_that_leaves_aborts_both_legs(model_dir: Path) -> None:
    hold, prefilling = asyncio.Event(), asyncio.Event()

    def stalled_prefill(request: WireRequest) -> Sequence[WorkerMessage | asyncio.Event]:
        prefilling.set()
        return [hold, complete([9707], reason="length")]

    def stalled(request: WireRequest) -> Sequence[WorkerMessage | asyncio.Event]:
        return [
            prefilling,
            Chunk(0, [9707], len(request.input_ids), 1, 0),
            hold,
            complete([EOS], matched=EOS),
        ]

    gateway, prefill, decode = await pd_gateway(model_dir, stalled_prefill, stalled)
    try:
        stream = gateway.generate(chat(request_id="pd-leave", stream=True))
        async with contextlib.aclosing(stream):
            async for event in stream:
                if isinstance(event, TextDelta):
                    break  # the client goes away after the first text
        await until(lambda: prefill.aborted == decode.aborted == ["pd-leave"])
        assert all(w.load == 0 for w in gateway.registry.all())
    finally:
        hold.set()
        await gateway.stop()


async def test_pairs_of_other_engines_are_refused_before_any_leg_runs(model_dir: Path) -> None:
    """TensorRT-LLM has no PD flow here: never SGLang's bootstrap room."""
    gateway, prefill, decode = await pd_gateway(model_dir, one_token, hello)
    prefill.runtime = decode.runtime = "trtllm"  # type: ignore[misc]  # as detected at registration
    try:
        with pytest.raises(UnsupportedParameter, match="not supported yet for trtllm workers"):
            await gateway.collect(chat())
    finally:
        await gateway.stop()
    assert prefill.requests == decode.requests == []


async def test_each_role_has_its_own_policy(model_dir: Path) -> None:
    fleet = Fleet()
    prefills = [fleet.add(i, one_token, info(model_dir)) for i in (0, 1)]
    decode = fleet.add(2, hello, info(model_dir))
    config = GatewayConfig(
        worker_urls=(),
        pd_disaggregation=True,
        prefill=((WorkerUrl.parse(url(0)), None), (WorkerUrl.parse(url(1)), None)),
        decode=(WorkerUrl.parse(url(2)),),
        policy="cache_aware",
        prefill_policy="round_robin",
        disable_health_check=True,
    )
    gateway = Gateway(config, client_factory=fleet)
    await gateway.start()
    try:
        await until(lambda: gateway.registry.ready_count() == 3, timeout=10)
        for i in range(4):
            await gateway.collect(chat(request_id=f"rr-{i}"))
        await until(lambda: sum(len(p.requests) for p in prefills) == 4)
    finally:
        await gateway.stop()
    assert [len(p.requests) for p in prefills] == [2, 2]  # round robin, whatever cache_aware would do
    assert len(decode.requests) == 4
    assert type(gateway.role_policies["decode"]) is type(gateway.policy)


def test_role_policies_need_pd(model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="--decode-policy needs --pd-disaggregation"):
        GatewayConfig(worker_urls=(WorkerUrl.parse(url(0)),), decode_policy="random")
