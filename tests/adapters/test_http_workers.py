"""HTTP workers (OpenAI-compatible, e.g. ``refworker --mode http``) are proxied, streaming or not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from aiohttp import web

from adapters.app import build_app
from dataplane.config import GatewayConfig, WorkerUrl
from tests.fakes.refworker_proc import RefWorkerProcs

MODEL = "Qwen/Qwen3-0.6B"
FIXED = "Hello! 你好，世界。I am a reference worker 🤖🚀 — ünïcödé ok."


@pytest.fixture(scope="module")
async def gateway_url() -> AsyncIterator[str]:
    async with RefWorkerProcs(2, "--mode", "http") as workers:
        urls = tuple(WorkerUrl.parse(f"http://{h}:{p}") for h, p in workers)
        config = GatewayConfig(worker_urls=urls, host="127.0.0.1", port=0, health_check_interval_secs=0.5)
        runner = web.AppRunner(build_app(config), handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                async with session.get(f"{url}/readiness") as r:
                    if r.status == 200 and (await r.json())["healthy_workers"] == 2:
                        break
                await asyncio.sleep(0.05)
        yield url
        await runner.cleanup()


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


async def test_unknown_model_is_404_before_any_worker(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


async def test_workers_lists_http_workers(gateway_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway_url}/workers") as r:
        body = await r.json()
    assert {w["connection_mode"] for w in body["workers"]} == {"http"}
    assert body["stats"]["healthy_workers"] == 2
