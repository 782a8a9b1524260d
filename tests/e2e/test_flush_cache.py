"""``POST /flush_cache``: every worker drops its prefix cache — gRPC workers of each engine service that
has ``FlushCache``, HTTP workers by ``POST /flush_cache`` — and the answer says who did not and why."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import aiohttp

from dataplane.config import WorkerUrl
from tests.e2e.conftest import MODEL, GatewayServer, api_client, chat, deployment, gateway_config
from tests.fakes.refworker_proc import RefWorkerProcs

STALL = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "[ref stall=1] wait"}]}
LONG = " ".join(f"word{i}" for i in range(200))


async def flush(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/flush_cache") as reply:
        return reply.status, await reply.json()


async def test_a_flushed_worker_no_longer_serves_the_prompt_from_its_cache(model_dir: Path) -> None:
    with deployment(1, model_dir) as d:
        async with api_client(d) as client, aiohttp.ClientSession() as http:
            await chat(client, LONG, max_tokens=1)
            warm = await chat(client, LONG, max_tokens=1)
            assert warm.usage.prompt_tokens_details.cached_tokens > 0  # type: ignore[union-attr]
            status, body = await flush(http, d.url)
            assert status == 200, body
            assert (body["status"], body["workers_flushed"], body["total_workers"]) == ("success", 1, 1)
            cold = await chat(client, LONG, max_tokens=1)
            assert cold.usage.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]


async def test_every_worker_is_asked_and_the_ones_that_cannot_are_named(model_dir: Path) -> None:
    async with (
        RefWorkerProcs(1, "--engine", "vllm") as [(h, p)],
        RefWorkerProcs(1, "--engine", "trtllm", "--reported-model-path", MODEL) as [(th, tp)],
        RefWorkerProcs(1, "--mode", "http", "--served-model-name", "ref/http-model") as [(hh, hp)],
    ):
        urls = [f"grpc://{h}:{p}", f"grpc://{th}:{tp}", f"http://{hh}:{hp}"]
        config = dataclasses.replace(
            gateway_config([(h, p)], model_dir), worker_urls=tuple(WorkerUrl.parse(u) for u in urls)
        )
        gateway = GatewayServer(config).start()
        try:
            await asyncio.to_thread(gateway.wait_ready, 3)
            async with aiohttp.ClientSession() as http:
                status, body = await flush(http, gateway.url)
                assert status == 206, body
                assert (body["status"], body["workers_flushed"], body["total_workers"]) == (
                    "partial_success", 2, 3,
                )  # fmt: skip
                assert body["successful"] == [urls[0], urls[2]]
                assert body["failed"] == [
                    {"worker": urls[1], "error": "its service (trtllm) has no cache flush"}
                ]
                # A worker with a request running refuses (the engine's rule), and says so.
                async with http.post(f"{urls[2]}/v1/chat/completions", json=STALL) as stalled:
                    await stalled.content.readline()
                    status, body = await flush(http, gateway.url)
                assert status == 206 and body["workers_flushed"] == 1
                [busy] = [f for f in body["failed"] if f["worker"] == urls[2]]
                assert "did not flush" in busy["error"] and "requests running" in busy["error"]
        finally:
            gateway.stop()
