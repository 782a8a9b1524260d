"""Workers serving vLLM's or TensorRT-LLM's gRPC service (reference workers with ``--engine vllm|trtllm``,
on smg-grpc-proto's own ``vllm_engine``/``trtllm_service`` stubs): found out at registration
(``--backend auto``, the default) or named (``--backend vllm|trtllm``), and answering through the gateway
exactly as workers serving SGLang's service with the same engine behind them do (``shared``)."""

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
    answer,
    api_client,
    chat,
    chat_stream,
    deployment,
    dispatched_as,
    drop_after_first_text,
    eventually,
    find_request,
    gateway_config,
    get_json,
    new_rid,
    streamed_text,
    wait_idle,
)
from tests.fakes.refworker_proc import RefWorkerProcs, read_record

ENGINES = ["vllm", "trtllm"]
# TRT-LLM names a model by the path it was started with (no served name on its wire), as `trtllm-serve
# Qwen/Qwen3-0.6B` would.
ENGINE_ARGS = {"vllm": ("--engine", "vllm"), "trtllm": ("--engine", "trtllm", "--reported-model-path", MODEL)}


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[tuple[str, Deployment]]:
    """Two reference workers serving the engine's service behind a round-robin gateway not told which."""
    with deployment(2, model_dir, *ENGINE_ARGS[request.param], disable_circuit_breaker=True) as d:
        yield request.param, d


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
    shared: Deployment, engine: tuple[str, Deployment], params: dict[str, Any]
) -> None:
    async with api_client(shared) as sglang_client, api_client(engine[1]) as other_client:
        expected = answer(await chat(sglang_client, "Say hello", **params))
        got = answer(await chat(other_client, "Say hello", **params))
    assert got == expected
    assert got["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("params", CASES, ids=lambda p: json.dumps(p, sort_keys=True))
async def test_streamed_answers_match_sglang_workers(
    shared: Deployment, engine: tuple[str, Deployment], params: dict[str, Any]
) -> None:
    options = {"stream_options": {"include_usage": True}, **params}
    async with api_client(shared) as sglang_client, api_client(engine[1]) as other_client:
        expected = await chat_stream(sglang_client, "Say hello", **options)
        got = await chat_stream(other_client, "Say hello", **options)
    for index in range(params.get("n", 1)):
        assert streamed_text(got, index) == streamed_text(expected, index)
    finishes = [(c.index, c.finish_reason) for ch in got for c in ch.choices if c.finish_reason]
    assert finishes == [(c.index, c.finish_reason) for ch in expected for c in ch.choices if c.finish_reason]
    # vLLM counts each chunk's tokens only, TRT-LLM's Complete repeats every id: usage is the same.
    assert got[-1].usage == expected[-1].usage
    assert got[-1].usage is not None and got[-1].usage.completion_tokens > 0


async def test_a_seed_reaches_the_worker(shared: Deployment, engine: tuple[str, Deployment]) -> None:
    name, d = engine
    rid = new_rid("seed")
    async with api_client(d) as client:
        await chat(client, "Say hello", seed=7, max_tokens=3, extra_headers={"x-request-id": rid})
    _, request = find_request(d, rid)
    params = request["sampling_params"] if name == "vllm" else request["sampling_config"]
    assert int(params["seed"]) == 7  # a uint64 is a string in protobuf's JSON
    async with api_client(shared) as client:  # SGLang's protocol has no seed: refused, never dropped
        with pytest.raises(openai.BadRequestError, match="seed"):
            await chat(client, "Say hello", seed=7)


async def test_logit_bias_is_refused_by_name_where_the_wire_cannot_carry_it(
    engine: tuple[str, Deployment],
) -> None:
    name, d = engine
    async with api_client(d) as client:
        if name == "trtllm":
            with pytest.raises(openai.BadRequestError, match="logit_bias"):
                await chat(client, "Say hello", logit_bias={"42": 1.0})
        else:
            await chat(client, "Say hello", logit_bias={"42": 1.0}, max_tokens=2)


async def test_a_dropped_stream_aborts_the_worker_request(engine: tuple[str, Deployment]) -> None:
    d = engine[1]
    rid = new_rid("drop")
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "[ref stall=1] keep talking"}],
    }
    async with aiohttp.ClientSession() as http:
        await drop_after_first_text(http, f"{d.url}/v1/chat/completions", body, rid)

        def aborted() -> bool:
            return any(
                dispatched_as(a["request_id"], rid) for record in d.records() for a in record["aborted"]
            )

        await eventually(aborted)
        await wait_idle(http, d)


def test_named_runtimes(engine: tuple[str, Deployment], model_dir: Path) -> None:
    """``--backend vllm|trtllm`` skips the question; ``--backend sglang`` in front of such a worker never
    makes it ready (its registration keeps failing with UNIMPLEMENTED), and /workers says which it tried."""
    name, d = engine
    named = GatewayServer(gateway_config(d.workers[:1], model_dir, runtime=name)).start()
    try:
        named.wait_ready(healthy=1)
    finally:
        named.stop()
    wrong = GatewayServer(gateway_config(d.workers[:1], model_dir, runtime="sglang")).start()
    try:
        time.sleep(1.0)
        status, body = wrong.get_json("/readiness")
        assert status == 503, body
        status, body = wrong.get_json("/workers")
        assert [(w["status"], w["runtime_type"]) for w in body["workers"]] == [("pending", "sglang")]
    finally:
        wrong.stop()


async def test_the_workers_list_says_which_service_each_worker_speaks(
    shared: Deployment, engine: tuple[str, Deployment]
) -> None:
    async with aiohttp.ClientSession() as http:
        for d, runtime in ((shared, "sglang"), (engine[1], engine[0])):
            _, body = await get_json(http, f"{d.url}/workers")
            assert [w["runtime_type"] for w in body["workers"]] == [runtime, runtime]


@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("name", ENGINES)
async def test_a_worker_added_at_run_time_takes_traffic(model_dir: Path, name: str, named: bool) -> None:
    """Beside SGLang-protocol workers, for the same model: SMG's ``runtime_type`` names it, or it is asked."""
    with deployment(1, model_dir) as d:
        async with RefWorkerProcs(1, *ENGINE_ARGS[name]) as ((host, port),), aiohttp.ClientSession() as http:
            body = {"url": f"grpc://{host}:{port}"} | ({"runtime_type": name} if named else {})
            async with http.post(f"{d.url}/workers", json=body) as reply:
                assert reply.status == 202
                location = (await reply.json())["location"]

            async def ready() -> bool:
                _, worker = await get_json(http, f"{d.url}{location}")
                return worker["status"] == "ready" and worker["runtime_type"] == name

            await eventually(ready)
            prefix = new_rid("mixed")
            async with api_client(d) as client:
                answers = [
                    answer(await chat(client, "Say hello", extra_headers={"x-request-id": f"{prefix}-{i}"}))
                    for i in range(4)
                ]
            assert all(a == answers[0] for a in answers)
            assert sum(rid.startswith(prefix) for rid in read_record(host, port)["received"]) == 2
