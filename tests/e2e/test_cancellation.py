"""A client that goes away: the worker request is aborted (Abort RPC "Stream dropped") and/or its RPC
cancelled, and the gateway's load on that worker returns to zero."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.conftest import (
    MODEL,
    Deployment,
    api_client,
    dispatched_as,
    eventually,
    get_json,
    new_rid,
    wait_idle,
)


def worker_saw_the_drop(d: Deployment, rid: str, count: int = 1) -> dict[str, Any] | None:
    """What the workers recorded once the gateway tore ``rid``'s ``count`` dispatches down: aborts naming
    the drop."""
    aborts = [
        a
        for record in d.records()
        for a in record["aborted"]
        if dispatched_as(a["request_id"], rid) and "drop" in a["reason"].lower()
    ]
    if len({a["request_id"] for a in aborts}) < count:
        return None
    cancelled = [c for record in d.records() for c in record["cancelled"] if dispatched_as(c, rid)]
    return {"aborted": aborts, "cancelled": bool(cancelled)}


async def total_load(http: aiohttp.ClientSession, d: Deployment) -> int:
    _, body = await get_json(http, f"{d.url}/workers")
    return int(body["stats"]["total_load"])


@pytest.mark.parametrize(
    "directive",
    [
        "stall=1",  # one chunk, then silence until aborted
        "script=filler tokens=400 itl_ms=50",  # a steady trickle of tokens
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_stream_dropped_after_first_chunk(
    http: aiohttp.ClientSession, shared: Deployment, directive: str, path: str
) -> None:
    rid = new_rid("drop")
    content = f"[ref {directive}] keep talking"
    body: dict[str, Any] = {"model": MODEL, "stream": True, "max_tokens": 1000}
    body |= {"messages": [{"role": "user", "content": content}]} if "chat" in path else {"prompt": content}
    reply = await http.post(shared.url + path, json=body, headers={"x-request-id": rid})
    try:
        assert reply.status == 200
        # Read until the first generated text arrives.
        while True:
            line = await reply.content.readline()
            assert line, "stream ended before any text"
            if not line.startswith(b"data: {"):
                continue
            choice = json.loads(line[6:])["choices"][0]
            if choice.get("delta", {}).get("content") or choice.get("text"):
                break
        assert await total_load(http, shared) == 1
    finally:
        reply.close()  # drops the connection mid-stream

    seen = await eventually(lambda: worker_saw_the_drop(shared, rid))
    assert seen["aborted"]
    await wait_idle(http, shared)


async def test_non_stream_client_timeout(http: aiohttp.ClientSession, shared: Deployment) -> None:
    rid = new_rid("timeout")
    async with api_client(shared, timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "[ref stall=1] take your time"}],
                extra_headers={"x-request-id": rid},
            )
    seen = await eventually(lambda: worker_saw_the_drop(shared, rid))
    assert seen["aborted"]
    await wait_idle(http, shared)


async def test_stream_client_timeout_openai(http: aiohttp.ClientSession, shared: Deployment) -> None:
    rid = new_rid("timeout")
    async with api_client(shared, timeout=0.5) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "[ref stall=1] take your time"}],
            stream=True,
            extra_headers={"x-request-id": rid},
        )
        with pytest.raises(openai.APITimeoutError):
            async for _ in stream:
                pass
    seen = await eventually(lambda: worker_saw_the_drop(shared, rid))
    assert seen["aborted"]
    await wait_idle(http, shared)


async def test_many_drops_leave_no_load(http: aiohttp.ClientSession, shared: Deployment) -> None:
    """Several concurrent streams dropped at once: every lease is given back, every worker request aborted."""
    rids = [new_rid("many") for _ in range(6)]
    replies = []
    try:
        for rid in rids:
            body = {
                "model": MODEL,
                "stream": True,
                "messages": [{"role": "user", "content": "[ref stall=1] x"}],
            }
            replies.append(
                await http.post(f"{shared.url}/v1/chat/completions", json=body, headers={"x-request-id": rid})
            )
        for reply in replies:
            assert reply.status == 200
            await reply.content.readline()  # the stream has begun
        assert await eventually(lambda: _load_is(http, shared, 6))
    finally:
        for reply in replies:
            reply.close()
    for rid in rids:
        await eventually(lambda rid=rid: worker_saw_the_drop(shared, rid))
    await wait_idle(http, shared)


async def _load_is(http: aiohttp.ClientSession, d: Deployment, value: int) -> bool:
    return await total_load(http, d) == value


async def test_batch_stream_dropped_aborts_every_prompt(
    http: aiohttp.ClientSession, shared: Deployment
) -> None:
    rid = new_rid("batch")
    body = {
        "model": MODEL,
        "stream": True,
        "prompt": ["[ref stall=1] a", "[ref stall=1] b"],
        "max_tokens": 50,
    }
    reply = await http.post(f"{shared.url}/v1/completions", json=body, headers={"x-request-id": rid})
    try:
        assert reply.status == 200
        await reply.content.readline()
    finally:
        reply.close()
    # One worker request per prompt, each torn down.
    await eventually(lambda: worker_saw_the_drop(shared, rid, count=2))
    await wait_idle(http, shared)


@pytest.mark.parametrize("stream", [False, True])
async def test_client_gone_before_the_first_token(
    http: aiohttp.ClientSession, shared: Deployment, stream: bool
) -> None:
    """No byte was sent yet (a long time to first token): the worker request is still torn down."""
    rid = new_rid("early")
    body = {
        "model": MODEL,
        "stream": stream,
        "messages": [{"role": "user", "content": "[ref ttft_ms=20000] hi"}],
    }
    url = f"{shared.url}/v1/chat/completions"
    headers = {"x-request-id": rid}
    # Wait until the worker has the request, then hang up.
    request = asyncio.ensure_future(http.post(url, json=body, headers=headers))
    try:
        await eventually(lambda: any(dispatched_as(e, rid) for r in shared.records() for e in r["received"]))
        assert await total_load(http, shared) == 1
    finally:
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
    await eventually(lambda: worker_saw_the_drop(shared, rid))
    await wait_idle(http, shared)


async def test_dropping_one_request_leaves_another_with_the_same_id_alone(
    http: aiohttp.ClientSession, chunky: Deployment
) -> None:
    rid = new_rid("dup")
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "[ref script=filler tokens=60 itl_ms=10] hi"}],
    }
    url = f"{chunky.url}/v1/chat/completions"
    first = await http.post(url, json=body, headers={"x-request-id": rid})
    await first.content.readline()
    second = await http.post(url, json=body, headers={"x-request-id": rid})
    await second.content.readline()
    first.close()
    events = (await second.read()).strip().split(b"\n\n")
    assert events[-1] == b"data: [DONE]"
    assert json.loads(events[-2].removeprefix(b"data: "))["choices"][0]["finish_reason"] == "stop"
    await wait_idle(http, chunky)
