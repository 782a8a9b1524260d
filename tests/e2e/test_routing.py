"""Several workers: round-robin spreads requests evenly; a killed worker is routed around at once (retry
before the first token) and marked unhealthy by the health checks, while the gateway stays ready."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from refworker.scripts import FIXED_TEXT
from tests.e2e.conftest import (
    MODEL,
    Deployment,
    api_client,
    deployment,
    eventually,
    get_json,
    new_rid,
    wait_idle,
)
from tests.fakes.refworker_proc import read_record


@pytest.fixture
def fragile(model_dir: Path) -> Iterator[Deployment]:
    """Two workers of its own (one gets killed) with fast health checks that act on one result."""
    with deployment(
        2,
        model_dir,
        health_check_interval_secs=0.3,
        health_check_timeout_secs=0.5,
        health_failure_threshold=1,
        health_success_threshold=1,
    ) as d:
        yield d


def counts(d: Deployment, prefix: str) -> list[int]:
    return [sum(rid.startswith(prefix) for rid in record["received"]) for record in d.records()]


@pytest.mark.parametrize("stream", [False, True])
async def test_round_robin_splits_evenly(
    client: openai.AsyncOpenAI, shared: Deployment, stream: bool
) -> None:
    prefix = new_rid("rr")
    for i in range(8):
        reply = await client.chat.completions.create(  # type: ignore[call-overload]
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,
            extra_headers={"x-request-id": f"{prefix}-{i}"},
        )
        if stream:
            async for _ in reply:
                pass
    assert counts(shared, prefix) == [4, 4]


async def test_round_robin_under_concurrency(
    client: openai.AsyncOpenAI, http: aiohttp.ClientSession, shared: Deployment
) -> None:
    prefix = new_rid("rrc")
    replies = await asyncio.gather(
        *(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "[ref itl_ms=2] hi"}],
                extra_headers={"x-request-id": f"{prefix}-{i}"},
            )
            for i in range(10)
        )
    )
    assert all(r.choices[0].message.content == FIXED_TEXT for r in replies)
    assert counts(shared, prefix) == [5, 5]
    await wait_idle(http, shared)


async def test_killed_worker_is_routed_around(http: aiohttp.ClientSession, fragile: Deployment) -> None:
    dead_host, dead_port = fragile.workers[0]
    dead_url = f"grpc://{dead_host}:{dead_port}"
    victim = fragile.procs.procs[0]
    victim.kill()
    victim.wait()

    # Straight away, before any health check noticed: every request still succeeds (retried before its
    # first token on the live worker).
    prefix = new_rid("failover")
    async with api_client(fragile) as client:
        for i in range(6):
            stream = i % 2 == 1
            reply = await client.chat.completions.create(  # type: ignore[call-overload]
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                stream=stream,
                extra_headers={"x-request-id": f"{prefix}-{i}"},
            )
            if stream:
                text = "".join([c.choices[0].delta.content or "" async for c in reply if c.choices])
            else:
                text = reply.choices[0].message.content
            assert text == FIXED_TEXT

    # All served by the survivor (a retried request reaches it under a derived id).
    survivor = read_record(*fragile.workers[1])
    # Engine ids are "{client id}-{unique}" plus "-retryN" on a retry.
    served = sorted(
        rid.split("-retry")[0].rsplit("-", 1)[0] for rid in survivor["received"] if rid.startswith(prefix)
    )
    assert served == [f"{prefix}-{i}" for i in range(6)]

    async def dead_marked_unhealthy() -> bool:
        _, body = await get_json(http, f"{fragile.url}/workers")
        by_url = {w["url"]: w for w in body["workers"]}
        return by_url[dead_url]["is_healthy"] is False and body["stats"]["healthy_workers"] == 1

    await eventually(dead_marked_unhealthy)
    status, body = await get_json(http, f"{fragile.url}/readiness")
    assert status == 200
    assert body == {"status": "ready", "healthy_workers": 1, "total_workers": 2}
    workers = await wait_idle(http, fragile)
    assert {w["url"]: w["is_healthy"] for w in workers}[dead_url] is False


async def _read_stream(reply: aiohttp.ClientResponse, first_text: asyncio.Event) -> list[dict[str, Any]]:
    payloads = []
    async for line in reply.content:
        if line.startswith(b"data: {"):
            payload = json.loads(line[6:])
            payloads.append(payload)
            if any(c["delta"].get("content") for c in payload.get("choices", [])):
                first_text.set()
        elif line.startswith(b"data: [DONE]"):
            payloads.append({"done": True})
    return payloads


async def test_worker_killed_mid_stream(http: aiohttp.ClientSession, fragile: Deployment) -> None:
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "[ref script=filler tokens=100 itl_ms=10] go"}],
    }
    started = [asyncio.Event(), asyncio.Event()]
    replies = [await http.post(f"{fragile.url}/v1/chat/completions", json=body) for _ in range(2)]
    readers = [asyncio.create_task(_read_stream(r, e)) for r, e in zip(replies, started, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 10)
    victim = fragile.procs.procs[0]
    victim.kill()
    victim.wait()
    outcomes = sorted(await asyncio.gather(*readers), key=lambda p: "error" in p[-2])
    for reply in replies:
        reply.close()

    completed, broken = outcomes
    # The stream on the survivor finishes normally.
    assert completed[-1] == {"done": True}
    assert completed[-2]["choices"][0]["finish_reason"] == "stop"
    # The one on the killed worker gets an in-band error, then [DONE].
    assert broken[-1] == {"done": True}
    assert broken[-2]["error"]["message"]
    await wait_idle(http, fragile)


async def test_concurrent_mixed_requests(
    client: openai.AsyncOpenAI, http: aiohttp.ClientSession, shared: Deployment
) -> None:
    """Many requests at once, streamed or not, with different chunkings: each gets exactly its own text."""

    async def one(i: int) -> tuple[str, str]:
        script = "fixed" if i % 2 else "echo"
        content = f"[ref script={script} chunk=random seed={i}] request {i}"
        expected = FIXED_TEXT if i % 2 else f"user\n{content}"
        messages = [{"role": "user", "content": content}]
        if i % 3:
            stream = await client.chat.completions.create(model=MODEL, messages=messages, stream=True)  # type: ignore[arg-type]
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        else:
            reply = await client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
            text = reply.choices[0].message.content or ""
        return text, expected

    results = await asyncio.gather(*(one(i) for i in range(40)))
    for text, expected in results:
        assert text == expected
    await wait_idle(http, shared)


async def test_worker_that_stops_answering_rejoins(http: aiohttp.ClientSession, fragile: Deployment) -> None:
    """Not-ready is not the end: a worker whose probes fail (frozen, not dead) comes back when they pass
    again, before the consecutive failures reach 3 × the threshold (``failed``, terminal)."""
    host, port = fragile.workers[0]
    url = f"grpc://{host}:{port}"
    frozen = fragile.procs.procs[0]

    async def health_of_first() -> bool | None:
        _, body = await get_json(http, f"{fragile.url}/workers")
        return {w["url"]: w["is_healthy"] for w in body["workers"]}[url]

    frozen.send_signal(signal.SIGSTOP)
    try:
        await eventually(lambda: _is(health_of_first(), False))
    finally:
        frozen.send_signal(signal.SIGCONT)
    await eventually(lambda: _is(health_of_first(), True))
    prefix = new_rid("rejoin")
    async with api_client(fragile) as client:
        for i in range(4):
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-request-id": f"{prefix}-{i}"},
            )
    assert counts(fragile, prefix) == [2, 2]
    status, body = await get_json(http, f"{fragile.url}/readiness")
    assert (status, body["healthy_workers"]) == (200, 2)


async def _is(value: Any, expected: bool) -> bool:
    return (await value) is expected
