"""The workers API and worker lifecycle against real reference workers: adding a worker while serving,
removing one under streaming load, a killed worker's circuit breaker, engine loads, KV event streams."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dataplane.config import WorkerUrl
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
from tests.fakes.refworker_proc import RefWorkerProcs, read_record


def worker_id(host: str, port: int) -> str:
    return WorkerUrl.parse(f"grpc://{host}:{port}").worker_id


def served(record: dict[str, Any], prefix: str) -> int:
    return sum(rid.startswith(prefix) for rid in record["received"])


async def post_worker(http: aiohttp.ClientSession, d: Deployment, body: Any) -> tuple[int, Any]:
    async with http.post(f"{d.url}/workers", json=body) as reply:
        return reply.status, await reply.json(content_type=None)


async def send_one_long_prompt_four_times(d: Deployment, tag: str) -> str:
    """Four requests with the same 300-word prompt; returns their request-id prefix."""
    prompt = "[ref script=echo] " + " ".join(f"word{i}" for i in range(300))
    prefix = new_rid(tag)
    async with api_client(d) as client:
        for i in range(4):
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=4,
                extra_headers={"x-request-id": f"{prefix}-{i}"},
            )
    return prefix


# ---- validation (on the shared deployment: nothing here changes it) -------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "grpc://127.0.0.1:1", "priority": 3}, "priority"),
        ({"labels": {"a": "b"}}, "url"),
        ({"url": "ftp://127.0.0.1:1"}, "url"),
        ({"url": "grpc://127.0.0.1"}, "url"),
        ({"url": "grpc://127.0.0.1:1", "labels": {"a": 1}}, "labels"),
        ({"url": "grpc://127.0.0.1:1", "worker_type": "prefill"}, "worker_type"),
        ({"url": "grpc://127.0.0.1:1", "connection_mode": "http"}, "connection_mode"),
        ({"url": "grpc://127.0.0.1:1", "api_key": 5}, "api_key"),
        ({"url": "grpc://127.0.0.1:1", "runtime_type": "tokenspeed"}, "runtime_type"),
        (["grpc://127.0.0.1:1"], None),
    ],
)
async def test_add_worker_refuses_invalid_bodies(
    http: aiohttp.ClientSession, shared: Deployment, body: Any, param: str | None
) -> None:
    status, reply = await post_worker(http, shared, body)
    assert status == 400
    assert reply["error"]["message"] and reply["error"]["param"] == param
    _, listing = await get_json(http, f"{shared.url}/workers")
    assert listing["total"] == 2


async def test_add_worker_refuses_a_registered_address(
    http: aiohttp.ClientSession, shared: Deployment
) -> None:
    host, port = shared.workers[0]
    for spelling in (f"grpc://{host}:{port}", f"{host}:{port}"):
        status, reply = await post_worker(http, shared, {"url": spelling})
        assert status == 409
        assert reply["error"]["code"] == "worker_already_exists"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unknown_worker_id_is_404(http: aiohttp.ClientSession, shared: Deployment, method: str) -> None:
    async with http.request(method, f"{shared.url}/workers/0123456789abcdef") as reply:
        assert reply.status == 404
        assert (await reply.json())["error"]["code"] == "worker_not_found"


async def test_get_worker_by_id(http: aiohttp.ClientSession, shared: Deployment) -> None:
    host, port = shared.workers[1]
    status, body = await get_json(http, f"{shared.url}/workers/{worker_id(host, port)}")
    assert status == 200
    assert body["url"] == f"grpc://{host}:{port}" and body["status"] == "ready"
    assert body["circuit_breaker"] == "closed" and body["model_id"] == MODEL
    _, listing = await get_json(http, f"{shared.url}/workers")
    assert listing["stats"]["by_type"] == {"regular": 2, "prefill": 0, "decode": 0}


# ---- adding and removing while serving ------------------------------------------------------------------


async def test_added_worker_takes_traffic(http: aiohttp.ClientSession, model_dir: Path) -> None:
    with deployment(1, model_dir) as d:
        async with RefWorkerProcs(1) as ((host, port),):
            status, reply = await post_worker(
                http, d, {"url": f"grpc://{host}:{port}", "labels": {"zone": "b"}}
            )
            assert status == 202
            assert reply["id"] == worker_id(host, port) and reply["location"] == f"/workers/{reply['id']}"

            async def ready() -> bool:
                _, body = await get_json(http, f"{d.url}{reply['location']}")
                return body["status"] == "ready" and body["labels"]["zone"] == "b"

            await eventually(ready)
            prefix = new_rid("added")
            async with api_client(d) as client:
                for i in range(6):
                    await client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": "hi"}],
                        extra_headers={"x-request-id": f"{prefix}-{i}"},
                    )
            assert served(read_record(host, port), prefix) == 3
            assert served(d.records()[0], prefix) == 3
            _, listing = await get_json(http, f"{d.url}/workers")
            assert listing["total"] == 2 and listing["stats"]["healthy_workers"] == 2


async def _stream(http: aiohttp.ClientSession, url: str, started: asyncio.Event) -> list[bytes]:
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "[ref script=filler tokens=40 itl_ms=10] go"}],
    }
    lines = []
    async with http.post(f"{url}/v1/chat/completions", json=body) as reply:
        assert reply.status == 200
        async for line in reply.content:
            if line.strip():
                lines.append(line.strip())
                started.set()
    return lines


async def test_removing_a_worker_under_streaming_load_fails_no_request(
    http: aiohttp.ClientSession, model_dir: Path
) -> None:
    with deployment(2, model_dir) as d:
        host, port = d.workers[0]
        gone = worker_id(host, port)
        started = [asyncio.Event() for _ in range(6)]
        streams = [asyncio.create_task(_stream(http, d.url, e)) for e in started]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 10)
        async with http.delete(f"{d.url}/workers/{gone}") as reply:
            assert reply.status == 202
            assert (await reply.json())["status"] == "draining"
        status, body = await get_json(http, f"{d.url}/workers/{gone}")
        assert (status, body["status"]) == (200, "draining") and body["load"] == 3
        # New requests meanwhile go to the other worker only.
        prefix = new_rid("during")
        async with api_client(d) as client:
            for i in range(3):
                reply_ = await client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"x-request-id": f"{prefix}-{i}"},
                )
                assert reply_.choices[0].message.content == FIXED_TEXT
        for lines in await asyncio.gather(*streams):
            assert lines[-1] == b"data: [DONE]"
            assert b'"finish_reason":"stop"' in lines[-2] and b"error" not in b"".join(lines)
        assert served(d.records()[0], prefix) == 0
        assert d.records()[0]["aborted"] == [] and d.records()[0]["cancelled"] == []

        async def removed() -> bool:
            status, _ = await get_json(http, f"{d.url}/workers/{gone}")
            return status == 404

        await eventually(removed)
        _, listing = await get_json(http, f"{d.url}/workers")
        assert [w["url"] for w in listing["workers"]] == [f"grpc://{h}:{p}" for h, p in d.workers[1:]]


async def test_a_killed_worker_is_retried_around_and_its_breaker_opens(
    http: aiohttp.ClientSession, model_dir: Path
) -> None:
    # Health checks too slow to notice: the breaker alone shuts the dead worker out.
    with deployment(2, model_dir, cb_failure_threshold=2, retry_initial_backoff_ms=1.0) as d:
        victim = d.procs.procs[0]
        victim.kill()
        victim.wait()
        prefix = new_rid("breaker")
        async with api_client(d) as client:
            for i in range(6):
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    extra_headers={"x-request-id": f"{prefix}-{i}"},
                )
                text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
                assert text == FIXED_TEXT
        survivor = read_record(*d.workers[1])
        assert served(survivor, prefix) == 6  # every request, retried there when it met the dead one
        host, port = d.workers[0]
        _, dead = await get_json(http, f"{d.url}/workers/{worker_id(host, port)}")
        assert dead["circuit_breaker"] == "open"
        assert dead["status"] == "ready"  # not yet health-checked: the breaker decided alone
        await wait_idle(http, d)


# ---- engine loads and KV events -------------------------------------------------------------------------


async def test_polled_engine_loads_show_in_workers(http: aiohttp.ClientSession, model_dir: Path) -> None:
    with deployment(1, model_dir, policy="power_of_two", load_monitor_interval=0.05) as d:
        body = {
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": "[ref script=filler tokens=100 itl_ms=10] go"}],
        }
        async with http.post(f"{d.url}/v1/chat/completions", json=body) as reply:
            await reply.content.readline()  # running on the worker now

            async def running() -> dict[str, Any] | None:
                _, listing = await get_json(http, f"{d.url}/workers")
                load = listing["workers"][0]["engine_load"]
                return load if load and load["running_requests"] == 1 else None

            load = await eventually(running)
            assert 0 <= load["token_usage"] <= 1 and load["age_secs"] < 5
        # Leaving the stream early cancels it; the next polls see the worker idle.
        await eventually(lambda: _idle_engine(http, d))


async def _idle_engine(http: aiohttp.ClientSession, d: Deployment) -> bool:
    _, listing = await get_json(http, f"{d.url}/workers")
    return bool(listing["workers"][0]["engine_load"]["running_requests"] == 0)


async def test_cache_aware_follows_each_workers_kv_events(
    http: aiohttp.ClientSession, model_dir: Path
) -> None:
    with deployment(2, model_dir, policy="cache_aware") as d:
        await eventually(lambda: [r["kv_event_subscribers"] for r in d.records()] == [1, 1])
        prefix = await send_one_long_prompt_four_times(d, "kv")
        # The first request's prompt was cached where it ran; the others followed it there.
        assert sorted(served(r, prefix) for r in d.records()) == [0, 4]
        host, port = d.workers[0]
        async with http.delete(f"{d.url}/workers/{worker_id(host, port)}") as reply:
            assert reply.status == 202
        # Removing a worker ends its event stream.
        await eventually(lambda: read_record(host, port)["kv_event_subscribers"] == 0)


async def test_workers_without_kv_events_are_routed_approximately(model_dir: Path) -> None:
    with deployment(2, model_dir, "--no-kv-events", policy="cache_aware") as d:
        prefix = await send_one_long_prompt_four_times(d, "approx")
        assert sorted(served(r, prefix) for r in d.records()) == [0, 4]
        assert [r["kv_event_subscribers"] for r in d.records()] == [0, 0]
