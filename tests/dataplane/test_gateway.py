"""The data plane end to end against in-memory workers: routing, retries, abort-on-drop, leases."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dataplane.errors import InvalidRequest, ModelNotFound, NoHealthyWorker, WorkerError
from dataplane.gateway import Gateway
from dataplane.types import (
    Chunk,
    Finished,
    GenerateRequest,
    SamplingParams,
    Started,
    TextDelta,
    WireRequest,
    WorkerMessage,
)
from tests.dataplane.gateways import EOS, MODEL, chat, client, hello, started_gateway
from tests.fakes.worker import complete


@pytest.fixture
async def gateway(model_dir: Path) -> AsyncIterator[Gateway]:
    gw = await started_gateway(model_dir, [hello, hello])
    yield gw
    await gw.stop()


async def test_round_robin_spreads_requests_and_releases_leases(gateway: Gateway) -> None:
    for _ in range(4):
        done = await gateway.collect(chat())
        assert done.choices[0].text == "Hello"
    assert [len(client(gateway, i).requests) for i in (0, 1)] == [2, 2]
    assert [w.load for w in gateway.registry.all()] == [0, 0]
    await asyncio.sleep(0)  # an abort would be spawned as a task
    assert client(gateway, 0).aborted == [] and client(gateway, 0).closed_early == []


async def test_wire_request_carries_template_tokens_and_single_token_stops(gateway: Gateway) -> None:
    await gateway.collect(
        chat("Say hello", stop=("\n", "multi token stop"), stop_token_ids=(7,), max_tokens=5)
    )
    wire = client(gateway, 0).requests[0]
    assert wire.original_text.startswith("<|im_start|>user\nSay hello<|im_end|>")
    assert wire.input_ids == gateway.tokenizer(MODEL).encode(wire.original_text)
    newline = gateway.tokenizer(MODEL).encode("\n")
    assert wire.stop_token_ids == (7, *newline)
    assert wire.sampling.max_tokens == 5


@pytest.mark.parametrize(
    ("kwargs", "rendered_tail"),
    [
        ({"enable_thinking": False}, "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        ({}, "<|im_start|>assistant\n"),
    ],
)
async def test_chat_template_kwargs_reach_the_template(
    gateway: Gateway, kwargs: dict[str, object], rendered_tail: str
) -> None:
    request = GenerateRequest(
        request_id="r",
        model=MODEL,
        sampling=SamplingParams(),
        messages=({"role": "user", "content": "hi"},),
        chat_template_kwargs=kwargs,
    )
    await gateway.collect(request)
    assert client(gateway, 0).requests[-1].original_text.endswith(rendered_tail)


async def test_tools_reach_the_template(gateway: Gateway) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    request = GenerateRequest(
        request_id="r",
        model=MODEL,
        sampling=SamplingParams(),
        messages=({"role": "user", "content": "hi"},),
        tools=(tool,),
    )
    await gateway.collect(request)
    assert '"name": "get_weather"' in client(gateway, 0).requests[-1].original_text


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (GenerateRequest(request_id="r", model="nope", sampling=SamplingParams(), prompt="x"), ModelNotFound),
        (GenerateRequest(request_id="r", model=MODEL, sampling=SamplingParams(), prompt=""), InvalidRequest),
        (
            GenerateRequest(request_id="r", model=MODEL, sampling=SamplingParams(), prompt_ids=(10**8,)),
            InvalidRequest,
        ),
        (
            GenerateRequest(
                request_id="r", model=MODEL, sampling=SamplingParams(max_tokens=10**6), prompt="x"
            ),
            InvalidRequest,
        ),
    ],
)
async def test_bad_requests_fail_before_any_worker_is_asked(
    gateway: Gateway, request_: GenerateRequest, error: type[Exception]
) -> None:
    with pytest.raises(error):
        gateway.generate(request_)
    assert not client(gateway, 0).requests and not client(gateway, 1).requests


async def test_unavailable_worker_is_retried_on_another_before_the_first_token(model_dir: Path) -> None:
    def down(_: WireRequest) -> list[WorkerError]:
        return [WorkerError("connection refused", status=503)]

    gw = await started_gateway(model_dir, [down, hello])
    try:
        for _ in range(2):
            assert (await gw.collect(chat())).choices[0].text == "Hello"
    finally:
        await gw.stop()


async def test_worker_error_before_first_token_keeps_its_status(model_dir: Path) -> None:
    def bad(_: WireRequest) -> list[WorkerError]:
        return [WorkerError("bad", status=400, grpc_status="INVALID_ARGUMENT")]

    gw = await started_gateway(model_dir, [bad])
    try:
        with pytest.raises(WorkerError) as info:
            await gw.collect(chat())
        assert info.value.status == 400
        assert gw.registry.all()[0].load == 0
    finally:
        await gw.stop()


async def test_no_healthy_worker(gateway: Gateway) -> None:
    for w in gateway.registry.all():
        gateway.registry.set_status(w, "not_ready")
    with pytest.raises(NoHealthyWorker):
        await gateway.collect(chat())


async def test_dropping_the_stream_aborts_the_worker_and_releases_the_lease(model_dir: Path) -> None:
    gate = asyncio.Event()

    def stall(request: WireRequest) -> list[WorkerMessage | asyncio.Event]:
        return [Chunk(0, [9707], 3, 1, 0), gate, complete([EOS])]

    gw = await started_gateway(model_dir, [stall])
    try:
        stream = gw.generate(chat())
        async with contextlib.aclosing(stream):
            assert isinstance(await anext(stream), Started)
            assert isinstance(await anext(stream), TextDelta)
            assert gw.registry.all()[0].load == 1
        await asyncio.sleep(0)  # let the spawned abort run
        worker = client(gw, 0)
        assert worker.aborted == ["req-1"] and worker.closed_early == ["req-1"]
        assert gw.registry.all()[0].load == 0
    finally:
        await gw.stop()


async def test_stop_string_ends_the_request_and_aborts_the_worker(model_dir: Path) -> None:
    def chatty(request: WireRequest) -> list[WorkerMessage]:
        ids = [9707, 0, 1, 2, 3, 4]  # "Hello!\"#$%"
        return [Chunk(0, [i], 3, n, 0) for n, i in enumerate(ids, 1)] + [complete(ids)]

    gw = await started_gateway(model_dir, [chatty])
    try:
        done = await gw.collect(chat(stop=("#",)))
        assert done.choices[0].text == 'Hello!"'
        assert done.choices[0].finish_reason == "stop" and done.choices[0].matched_stop == "#"
        await asyncio.sleep(0)
        assert client(gw, 0).aborted == ["req-1"]
    finally:
        await gw.stop()


async def test_events_are_one_stream_for_both_views(gateway: Gateway) -> None:
    events = [e async for e in gateway.generate(chat())]
    assert isinstance(events[0], Started)
    assert [e for e in events if isinstance(e, Finished)] == [Finished(0, "stop", EOS)]


async def test_workers_registering_together_load_the_tokenizer_once(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataplane.gateway as gateway_module

    loads: list[str] = []
    load = gateway_module.load_tokenizer.__wrapped__  # uncached, so every call really loads

    def counting_load(source: str, *args: object) -> object:
        loads.append(source)
        return load(source, *args)

    monkeypatch.setattr(gateway_module, "load_tokenizer", counting_load)
    gw = await started_gateway(model_dir, [hello, hello, hello])
    try:
        assert loads == [str(model_dir)]
        assert len(gw.models()) == 1
    finally:
        await gw.stop()


async def test_created_is_the_request_time(gateway: Gateway) -> None:
    before = int(time.time())
    done = await gateway.collect(chat())
    assert before <= done.started.created <= int(time.time())


async def test_a_worker_that_ends_without_answering_is_a_plain_error(model_dir: Path) -> None:
    gw = await started_gateway(model_dir, [lambda _: []])
    try:
        stream = gw.generate(chat())
        with pytest.raises(WorkerError, match="ended before"):
            await anext(stream)  # before anything was sent: the adapter can still answer with a status
        assert gw.registry.all()[0].load == 0
    finally:
        await gw.stop()
