"""Workers serving vLLM's gRPC service (reference workers with ``--engine vllm``, on smg-grpc-proto's own
``vllm_engine`` stubs): found out at registration (``--backend auto``, the default) or named
(``--backend vllm``), and answering through the gateway exactly as workers serving SGLang's service with the
same engine behind them do (``shared``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.conftest import (
    MODEL,
    Deployment,
    GatewayServer,
    api_client,
    chat,
    chat_stream,
    deployment,
    dispatched_as,
    eventually,
    find_request,
    gateway_config,
    get_json,
    new_rid,
    streamed_text,
    wait_idle,
)
from tests.fakes.refworker_proc import RefWorkerProcs, read_record


@pytest.fixture(scope="module")
def vllm(model_dir: Path) -> Iterator[Deployment]:
    """Two reference workers serving vLLM's service behind a round-robin gateway that was not told so."""
    with deployment(2, model_dir, "--engine", "vllm", disable_circuit_breaker=True) as d:
        yield d


def answer(reply: Any) -> dict[str, Any]:
    """What a client reads of a chat completion, without its ids and timestamps."""
    data = reply.model_dump()
    for key in ("id", "created", "system_fingerprint"):
        data.pop(key, None)
    return data


CASES: list[dict[str, Any]] = [
    {},
    {"max_tokens": 5},
    {"n": 2, "max_tokens": 6},
    {"logprobs": True, "top_logprobs": 2, "max_tokens": 4},
    {"logprobs": True, "max_tokens": 3},
    {"stop": ["world"]},
]


@pytest.mark.parametrize("params", CASES, ids=lambda p: json.dumps(p, sort_keys=True))
async def test_non_streamed_answers_match_sglang_workers(
    shared: Deployment, vllm: Deployment, params: dict[str, Any]
) -> None:
    async with api_client(shared) as sglang_client, api_client(vllm) as vllm_client:
        expected = answer(await chat(sglang_client, "Say hello", **params))
        got = answer(await chat(vllm_client, "Say hello", **params))
    assert got == expected
    assert got["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("params", CASES, ids=lambda p: json.dumps(p, sort_keys=True))
async def test_streamed_answers_match_sglang_workers(
    shared: Deployment, vllm: Deployment, params: dict[str, Any]
) -> None:
    options = {"stream_options": {"include_usage": True}, **params}
    async with api_client(shared) as sglang_client, api_client(vllm) as vllm_client:
        expected = await chat_stream(sglang_client, "Say hello", **options)
        got = await chat_stream(vllm_client, "Say hello", **options)
    for index in range(params.get("n", 1)):
        assert streamed_text(got, index) == streamed_text(expected, index)
    finishes = [(c.index, c.finish_reason) for ch in got for c in ch.choices if c.finish_reason]
    assert finishes == [(c.index, c.finish_reason) for ch in expected for c in ch.choices if c.finish_reason]
    # vLLM counts each chunk's tokens only: the gateway adds them up.
    assert got[-1].usage == expected[-1].usage
    assert got[-1].usage is not None and got[-1].usage.completion_tokens > 0


async def test_a_seed_reaches_vllm_workers(shared: Deployment, vllm: Deployment) -> None:
    rid = new_rid("seed")
    async with api_client(vllm) as client:
        await chat(client, "Say hello", seed=7, max_tokens=3, extra_headers={"x-request-id": rid})
    _, request = find_request(vllm, rid)
    assert request["sampling_params"]["seed"] == 7
    async with api_client(shared) as client:  # SGLang's protocol has no seed: refused, never dropped
        with pytest.raises(openai.BadRequestError, match="seed"):
            await chat(client, "Say hello", seed=7)


async def test_a_dropped_stream_aborts_the_vllm_request(vllm: Deployment) -> None:
    rid = new_rid("drop")
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "[ref stall=1] keep talking"}],
    }
    async with aiohttp.ClientSession() as http:
        reply = await http.post(f"{vllm.url}/v1/chat/completions", json=body, headers={"x-request-id": rid})
        try:
            assert reply.status == 200
            while b'"content":"' not in (line := await reply.content.readline()) or b'"content":""' in line:
                assert line, "stream ended before any text"
        finally:
            reply.close()

        def aborted() -> bool:
            return any(
                dispatched_as(a["request_id"], rid) for record in vllm.records() for a in record["aborted"]
            )

        await eventually(aborted)
        await wait_idle(http, vllm)


def test_named_runtimes(vllm: Deployment, model_dir: Path) -> None:
    """``--backend vllm`` skips the question; ``--backend sglang`` in front of a vLLM worker never makes it
    ready (its registration keeps failing with UNIMPLEMENTED), and says why in /workers."""
    named = GatewayServer(gateway_config(vllm.workers[:1], model_dir, runtime="vllm")).start()
    try:
        named.wait_ready(healthy=1)
    finally:
        named.stop()
    wrong = GatewayServer(gateway_config(vllm.workers[:1], model_dir, runtime="sglang")).start()
    try:
        time.sleep(1.0)
        status, body = wrong.get_json("/readiness")
        assert status == 503, body
        status, body = wrong.get_json("/workers")
        assert [(w["status"], w["runtime_type"]) for w in body["workers"]] == [("pending", "sglang")]
    finally:
        wrong.stop()


async def test_the_workers_list_says_which_service_each_worker_speaks(
    shared: Deployment, vllm: Deployment
) -> None:
    async with aiohttp.ClientSession() as http:
        for d, runtime in ((shared, "sglang"), (vllm, "vllm")):
            _, body = await get_json(http, f"{d.url}/workers")
            assert [w["runtime_type"] for w in body["workers"]] == [runtime, runtime]


@pytest.mark.parametrize("runtime", [None, "vllm"])
async def test_a_vllm_worker_added_at_run_time_takes_traffic(model_dir: Path, runtime: str | None) -> None:
    """Beside SGLang-protocol workers, for the same model: SMG's ``runtime_type`` names it, or it is asked."""
    with deployment(1, model_dir) as d:
        async with RefWorkerProcs(1, "--engine", "vllm") as ((host, port),), aiohttp.ClientSession() as http:
            body = {"url": f"grpc://{host}:{port}"} | ({"runtime_type": runtime} if runtime else {})
            async with http.post(f"{d.url}/workers", json=body) as reply:
                assert reply.status == 202
                location = (await reply.json())["location"]

            async def ready() -> bool:
                _, worker = await get_json(http, f"{d.url}{location}")
                return worker["status"] == "ready" and worker["runtime_type"] == "vllm"

            await eventually(ready)
            prefix = new_rid("mixed")
            async with api_client(d) as client:
                answers = [
                    answer(await chat(client, "Say hello", extra_headers={"x-request-id": f"{prefix}-{i}"}))
                    for i in range(4)
                ]
            assert all(a == answers[0] for a in answers)
            assert sum(rid.startswith(prefix) for rid in read_record(host, port)["received"]) == 2
