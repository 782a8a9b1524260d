"""HTTP workers (OpenAI-compatible, e.g. ``refworker --mode http``) are proxied, streaming or not, routed
by the same policies on the request's text, retried before the first byte."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from adapters.app import build_app
from adapters.context import GATEWAY
from adapters.http_workers import HttpWorkerClient, routing_text
from dataplane.config import GatewayConfig, WorkerSpec, WorkerUrl
from dataplane.errors import WorkerError
from tests.fakes.refworker_proc import RefWorkerProcs
from tests.scrape import Scrape

MODEL = "Qwen/Qwen3-0.6B"
FIXED = "Hello! 你好，世界。I am a reference worker 🤖🚀 — ünïcödé ok."


@contextlib.asynccontextmanager
async def serving(urls: list[str], ready: int, **config: Any) -> AsyncIterator[tuple[str, web.Application]]:
    """A gateway (its URL and application) over ``urls`` on loopback, once ``ready`` workers are healthy."""
    worker_urls = tuple(WorkerUrl.parse(u) for u in urls)
    config.setdefault("health_check_interval_secs", 0.5)
    gateway = GatewayConfig(worker_urls=worker_urls, host="127.0.0.1", port=0, **config)
    app = build_app(gateway)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                async with session.get(f"{url}/readiness") as r:
                    if r.status == 200 and (await r.json())["healthy_workers"] == ready:
                        break
                await asyncio.sleep(0.05)
        yield url, app
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def workers() -> AsyncIterator[list[str]]:
    async with RefWorkerProcs(2, "--mode", "http") as addresses:
        yield [f"http://{h}:{p}" for h, p in addresses]


@pytest.fixture(scope="module")
async def gateway(workers: list[str]) -> AsyncIterator[tuple[str, web.Application]]:
    async with serving(workers, 2) as served:
        yield served


@pytest.fixture
def gateway_url(gateway: tuple[str, web.Application]) -> str:
    return gateway[0]


@pytest.fixture
def client(gateway_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="none", max_retries=0)


async def test_chat_is_proxied(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == FIXED
    assert reply.usage is not None and reply.usage.completion_tokens > 0


async def test_streaming_is_relayed_as_it_comes(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    deltas = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert len(deltas) > 3 and "".join(deltas) == FIXED


async def test_completions_are_proxied_and_worker_errors_keep_status(client: openai.AsyncOpenAI) -> None:
    reply = await client.completions.create(model=MODEL, prompt="hi", max_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError):
        await client.completions.create(model=MODEL, prompt="hi [ref fail=INVALID_ARGUMENT]")


async def test_forwarded_requests_are_in_the_router_metrics(
    client: openai.AsyncOpenAI, gateway: tuple[str, web.Application]
) -> None:
    registry = gateway[1][GATEWAY].metrics.registry

    def value(name: str, **labels: str) -> float:
        return Scrape(generate_latest(registry).decode()).value(name, router_type="http", **labels)

    chat = {"model": MODEL, "endpoint": "chat", "connection_mode": "http", "backend_type": "regular"}
    before = value("smg_router_requests_total", **chat, streaming="false")
    durations = value("smg_router_request_duration_seconds_count", **chat)
    errors = value("smg_router_request_errors_total", **chat, error_type="validation_error")
    await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):  # the worker's own 400, relayed
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "[ref fail=INVALID_ARGUMENT]"}]
        )
    assert value("smg_router_requests_total", **chat, streaming="false") == before + 2
    assert value("smg_router_request_duration_seconds_count", **chat) == durations + 1
    assert value("smg_router_request_errors_total", **chat, error_type="validation_error") == errors + 1
    assert value("smg_router_ttft_seconds_count") == 0  # the relayed stream is not parsed: no latencies


async def test_unknown_model_is_404_before_any_worker(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


async def test_workers_lists_http_workers(gateway_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway_url}/workers") as r:
        body = await r.json()
    assert {w["connection_mode"] for w in body["workers"]} == {"http"}
    assert body["stats"]["healthy_workers"] == 2


async def _received(session: aiohttp.ClientSession, worker: str, prefix: str) -> int:
    async with session.get(f"{worker}/refworker/record") as r:
        return sum(rid.startswith(prefix) for rid in (await r.json())["received"])


async def test_routing_key_sticks_to_one_http_worker(workers: list[str]) -> None:
    async with (
        serving(workers, 2, policy="consistent_hashing") as (url, _),
        aiohttp.ClientSession() as session,
    ):
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for i in range(6):
            headers = {"x-smg-routing-key": "tenant-7", "x-request-id": f"sticky-{i}"}
            async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status == 200
        assert sorted([await _received(session, w, "sticky-") for w in workers]) == [0, 6]


async def test_a_killed_http_worker_is_retried_around_and_its_breaker_opens(workers: list[str]) -> None:
    procs = RefWorkerProcs(1, "--mode", "http")
    ((host, port),) = await asyncio.to_thread(procs.start)
    victim = f"http://{host}:{port}"
    try:
        async with (
            serving([victim, workers[0]], 2, cb_failure_threshold=1, retry_initial_backoff_ms=1.0) as (
                url,
                _,
            ),
            aiohttp.ClientSession() as session,
        ):
            await asyncio.to_thread(procs.stop)
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
            async with client:
                for i in range(4):
                    stream = await client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": "hi"}],
                        stream=i % 2 == 1,
                        extra_headers={"x-request-id": f"failover-{i}"},
                    )
                    if i % 2:
                        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
                    else:
                        text = stream.choices[0].message.content
                    assert text == FIXED
            assert await _received(session, workers[0], "failover-") == 4
            async with session.get(f"{url}/workers") as r:
                by_url = {w["url"]: w for w in (await r.json())["workers"]}
            assert by_url[victim]["circuit_breaker"] == "open"
            assert [w["load"] for w in by_url.values()] == [0, 0]
    finally:
        await asyncio.to_thread(procs.stop)


def test_routing_text_is_the_conversation_not_the_json() -> None:
    chat = {
        "model": "m",
        "temperature": 0.5,
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}],
            },
        ],
    }
    assert routing_text(chat) == "system\nbe brief\nuser\nhello there\n"
    longer = {**chat, "messages": [*chat["messages"], {"role": "assistant", "content": "hi"}]}
    assert routing_text(longer).startswith(routing_text(chat))  # a conversation extends its prefix
    assert routing_text({"prompt": "once upon"}) == "once upon"
    assert routing_text({"prompt": ["a", "b"]}) == "a\nb"
    assert routing_text({"prompt": [[1, 2], [3]]}) == "1 2\n3"
    assert routing_text({}) == ""


async def test_the_health_check_endpoint_is_the_path_probed_on_http_workers() -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    spec = WorkerSpec(WorkerUrl.parse(f"http://127.0.0.1:{runner.addresses[0][1]}"))
    try:
        async with aiohttp.ClientSession() as session:
            assert await HttpWorkerClient(spec, session, "/healthz").health(5)
            assert not await HttpWorkerClient(spec, session).health(5)  # /health: 404 here
    finally:
        await runner.cleanup()


async def test_http_worker_loads_from_v1_loads_when_it_has_them() -> None:
    async def loads(_: web.Request) -> web.Response:
        ranks = [
            {
                "dp_rank": 0,
                "num_running_reqs": 2,
                "num_waiting_reqs": 1,
                "token_usage": 0.2,
                "gen_throughput": 5,
            },
            {
                "dp_rank": 1,
                "num_running_reqs": 3,
                "num_waiting_reqs": 0,
                "token_usage": 0.4,
                "gen_throughput": 7,
            },
        ]
        return web.json_response({"loads": ranks})

    async def broken(_: web.Request) -> web.Response:
        return web.json_response({"nothing": []})

    app = web.Application()
    app.router.add_get("/with/v1/loads", loads)
    app.router.add_get("/broken/v1/loads", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:

            def client(path: str) -> HttpWorkerClient:
                return HttpWorkerClient(WorkerSpec(WorkerUrl.parse(base + path)), session)

            load = await client("/with").get_loads(5)
            assert load is not None
            assert (load.running_requests, load.waiting_requests, load.gen_throughput) == (5, 1, 12)
            assert load.token_usage == pytest.approx(0.3)
            assert await client("/without").get_loads(5) is None  # 404: the worker reports no loads
            with pytest.raises(WorkerError):
                await client("/broken").get_loads(5)
            with pytest.raises(WorkerError) as caught:
                await anext(client("/with").kv_events(0))
            assert caught.value.status == 501
    finally:
        await runner.cleanup()
