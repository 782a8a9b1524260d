"""Public and admin endpoints: health, liveness, readiness, workers, models."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.e2e.conftest import MODEL, Deployment, GatewayServer, gateway_config, get_json


@pytest.fixture(scope="module")
def unready(model_dir: Path) -> Iterator[GatewayServer]:
    """A gateway whose only worker URL is a port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    server = GatewayServer(gateway_config([("127.0.0.1", dead_port)], model_dir)).start()
    yield server
    server.stop()


@pytest.mark.parametrize("path", ["/health", "/liveness"])
async def test_liveness(
    http: aiohttp.ClientSession, shared: Deployment, unready: GatewayServer, path: str
) -> None:
    for base in (shared.url, unready.url):  # alive even with no worker
        async with http.get(base + path) as reply:
            assert reply.status == 200
            assert await reply.text() == "OK"


async def test_readiness_with_healthy_workers(http: aiohttp.ClientSession, shared: Deployment) -> None:
    status, body = await get_json(http, f"{shared.url}/readiness")
    assert status == 200
    assert body == {"status": "ready", "healthy_workers": 2, "total_workers": 2}


async def test_readiness_without_a_live_worker(http: aiohttp.ClientSession, unready: GatewayServer) -> None:
    status, body = await get_json(http, f"{unready.url}/readiness")
    assert status == 503
    assert body["status"] == "not ready"
    assert body["healthy_workers"] == 0 and body["total_workers"] == 1


async def test_workers_lists_both_idle_and_healthy(http: aiohttp.ClientSession, shared: Deployment) -> None:
    status, body = await get_json(http, f"{shared.url}/workers")
    assert status == 200
    urls = sorted(w["url"] for w in body["workers"])
    assert urls == sorted(f"grpc://{host}:{port}" for host, port in shared.workers)
    for worker in body["workers"]:
        assert worker["is_healthy"] is True
        assert worker["status"] == "ready"
        assert worker["model_id"] == MODEL
        assert worker["connection_mode"] == "grpc"
        assert worker["load"] == 0
    assert body["total"] == 2
    assert body["stats"]["total_workers"] == 2
    assert body["stats"]["healthy_workers"] == 2
    assert body["stats"]["total_models"] == 1
    assert body["stats"]["total_load"] == 0


async def test_workers_filtered_by_model(http: aiohttp.ClientSession, shared: Deployment) -> None:
    _, body = await get_json(http, f"{shared.url}/workers?model={MODEL}")
    assert body["total"] == 2
    _, body = await get_json(http, f"{shared.url}/workers?model=other/model")
    assert body["total"] == 0 and body["workers"] == []


async def test_models(client: openai.AsyncOpenAI) -> None:
    models = [m async for m in client.models.list()]
    assert [m.id for m in models] == [MODEL]
    assert models[0].object == "model"
    assert models[0].created > 0


async def test_models_empty_before_any_worker_registered(
    http: aiohttp.ClientSession, unready: GatewayServer
) -> None:
    status, body = await get_json(http, f"{unready.url}/v1/models")
    assert status == 200
    assert body == {"object": "list", "data": []}


async def test_chat_without_a_registered_worker(unready: GatewayServer) -> None:
    client = openai.AsyncOpenAI(base_url=f"{unready.url}/v1", api_key="none", max_retries=0, timeout=10)
    async with client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    # Nothing is registered for the model yet: not found (or unavailable), never a crash.
    assert caught.value.status_code in (404, 503)


async def test_model_path_is_an_alias(client: openai.AsyncOpenAI, model_dir: Path) -> None:
    reply = await client.chat.completions.create(
        model=str(model_dir), messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == MODEL
