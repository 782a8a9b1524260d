"""HTTP mode through the official ``openai`` client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import openai
import pytest

from refworker.config import WorkerConfig
from refworker.model import ModelFiles
from refworker.scripts import FIXED_TEXT, THINK_TEXT
from refworker.server import RefWorker

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
async def http_worker(model: ModelFiles) -> AsyncIterator[RefWorker]:
    worker = RefWorker(replace(WorkerConfig(port=0), mode="http"), model=model)
    await worker.start()
    yield worker
    await worker.stop()


@pytest.fixture
async def client(http_worker: RefWorker) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{http_worker.port}/v1", api_key="none"
    ) as client:
        yield client


async def test_chat_non_stream(client: openai.AsyncOpenAI, http_worker: RefWorker) -> None:
    response = await client.chat.completions.create(model="Qwen/Qwen3-0.6B", messages=MESSAGES)  # type: ignore[arg-type]
    choice = response.choices[0]
    assert choice.message.content == FIXED_TEXT and choice.finish_reason == "stop"
    assert response.usage is not None and response.usage.completion_tokens > 0
    rendered = http_worker.engine.record.to_dict()["recent_requests"][0]
    assert rendered["messages"] == MESSAGES


async def test_chat_stream_with_usage_and_n(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="Qwen/Qwen3-0.6B",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        n=2,
        stream_options={"include_usage": True},
    )
    texts = {0: "", 1: ""}
    finishes = {}
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: FIXED_TEXT, 1: FIXED_TEXT} and finishes == {0: "stop", 1: "stop"}
    assert usage is not None and usage.prompt_tokens > 0


async def test_completions_with_stop_string_and_directive(client: openai.AsyncOpenAI) -> None:
    response = await client.completions.create(
        model="Qwen/Qwen3-0.6B", prompt="Think first. [ref script=think]", stop=["</think>"]
    )
    assert response.choices[0].text == THINK_TEXT.split("</think>")[0]
    assert response.choices[0].finish_reason == "stop"
    stream = await client.completions.create(
        model="Qwen/Qwen3-0.6B", prompt="[ref script=think chunk=3]", stop="</think>", stream=True
    )
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == THINK_TEXT.split("</think>")[0]


async def test_max_tokens_gives_length(client: openai.AsyncOpenAI) -> None:
    response = await client.completions.create(model="Qwen/Qwen3-0.6B", prompt="hi", max_tokens=3)
    assert response.choices[0].finish_reason == "length" and response.usage is not None
    assert response.usage.completion_tokens == 3


async def test_injected_failure_maps_to_http_status(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await client.with_options(max_retries=0).completions.create(
            model="Qwen/Qwen3-0.6B", prompt="[ref fail=UNAVAILABLE]"
        )
    assert info.value.status_code == 503


async def test_models_health_and_record(http_worker: RefWorker, client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["Qwen/Qwen3-0.6B"]
    base = f"http://127.0.0.1:{http_worker.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/health") as response:
            assert response.status == 200
        await client.completions.create(
            model="Qwen/Qwen3-0.6B", prompt="hi", extra_headers={"x-request-id": "h1"}
        )
        async with session.get(f"{base}/refworker/record") as response:
            record = await response.json()
    assert record["received"] == ["h1"] and record["metadata"][0]["x-request-id"] == "h1"


async def test_client_hangup_cancels_a_stalled_stream(http_worker: RefWorker) -> None:
    url = f"http://127.0.0.1:{http_worker.port}/v1/completions"
    body = {"model": "m", "prompt": "[ref stall=1]", "stream": True}
    async with aiohttp.ClientSession() as session:
        response = await session.post(url, json=body, headers={"x-request-id": "hangup"})
        assert (await response.content.readline()).startswith(b"data: ")
        response.close()
    async with asyncio.timeout(5):
        await http_worker.engine.wait_until(lambda: "hangup" in http_worker.engine.record.cancelled)
    assert not http_worker.engine.live


async def test_realistic_http_worker_reports_cached_tokens(model: ModelFiles) -> None:
    config = WorkerConfig(port=0, mode="http", realistic=True, prefill_tps=1e6, decode_base_ms=1.0)
    worker = RefWorker(config, model=model)
    await worker.start()
    try:
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{worker.port}/v1", api_key="none"
        ) as client:
            prompt = list(range(1000, 1040))
            cached = []
            for stream in (False, True):
                response = await client.completions.create(
                    model="Qwen/Qwen3-0.6B",
                    prompt=prompt,
                    max_tokens=3,
                    stream=stream,
                    stream_options={"include_usage": True} if stream else None,
                )
                if isinstance(response, openai.AsyncStream):
                    usage = [chunk.usage async for chunk in response if chunk.usage is not None][-1]
                else:
                    usage = response.usage
                assert usage is not None and usage.prompt_tokens_details is not None
                cached.append(usage.prompt_tokens_details.cached_tokens)
        assert cached == [0, 32]
    finally:
        await worker.stop()
