"""Prefill/decode disaggregation over SGLang's gRPC service (``--pd-disaggregation --prefill URL PORT
--decode URL``): reference workers in SGLang's prefill and decode roles, the official openai client.

Both halves get the same request — same id, the prefill worker's host and bootstrap port, one random
bootstrap room — and the client gets the decode worker's answer, exactly the answer a whole-request
worker gives."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from dataplane.config import GatewayConfig, WorkerUrl
from tests.e2e.conftest import (
    MODEL,
    Deployment,
    GatewayServer,
    answer,
    api_client,
    chat,
    chat_stream,
    dispatched_as,
    drop_after_first_text,
    eventually,
    get_json,
    new_rid,
    streamed_text,
)
from tests.fakes.refworker_proc import RefWorkerProcs, read_record

BOOTSTRAP_PORT = 9123


@dataclass(frozen=True)
class Pd:
    gateway: GatewayServer
    prefill: tuple[str, int]
    decode: tuple[str, int]

    @property
    def url(self) -> str:
        return self.gateway.url

    http: bool = False

    def requests(self, worker: tuple[str, int], rid: str) -> list[dict[str, Any]]:
        """What ``worker`` received for ``rid`` (an HTTP worker: the bodies sent with that request id)."""
        if not self.http:
            record = read_record(*worker)
            return [r for r in record["recent_requests"] if dispatched_as(r.get("request_id", ""), rid)]
        with urllib.request.urlopen(f"http://{worker[0]}:{worker[1]}/refworker/record", timeout=5) as reply:
            record = json.load(reply)
        pairs = zip(record["recent_requests"], record["metadata"], strict=True)
        return [body for body, headers in pairs if dispatched_as(headers.get("x-request-id", ""), rid)]


def pd_config(prefill: tuple[str, int], decode: tuple[str, int], model_dir: Path, **kw: Any) -> GatewayConfig:
    return GatewayConfig(
        worker_urls=(),
        pd_disaggregation=True,
        prefill=((WorkerUrl.parse(f"grpc://{prefill[0]}:{prefill[1]}"), BOOTSTRAP_PORT),),
        decode=(WorkerUrl.parse(f"grpc://{decode[0]}:{decode[1]}"),),
        host="127.0.0.1",
        port=0,
        model_path=str(model_dir),
        **kw,
    )


@pytest.fixture(scope="module")
async def pd(model_dir: Path) -> AsyncIterator[Pd]:
    async with (
        RefWorkerProcs(
            1, "--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", str(BOOTSTRAP_PORT)
        ) as [prefill],
        RefWorkerProcs(1, "--disaggregation-mode", "decode") as [decode],
    ):
        gateway = GatewayServer(pd_config(prefill, decode, model_dir)).start()
        try:
            await asyncio.to_thread(gateway.wait_ready, 2)
            yield Pd(gateway, prefill, decode)
        finally:
            gateway.stop()


def both_legs(pd: Pd, rid: str, timeout: float = 5.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """What each worker received for ``rid`` (the prefill leg may still be arriving after the answer)."""
    deadline = time.monotonic() + timeout
    while not (prefilled := pd.requests(pd.prefill, rid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    [decoded] = pd.requests(pd.decode, rid)
    assert len(prefilled) == 1, prefilled
    return prefilled[0], decoded


@pytest.mark.parametrize("params", [{}, {"max_tokens": 5}, {"n": 2, "max_tokens": 6}])
async def test_the_decode_workers_answer_is_a_whole_workers(
    pd: Pd, shared: Deployment, params: dict[str, Any]
) -> None:
    rid = new_rid("pd")
    async with api_client(shared) as whole, api_client(pd.gateway) as split:  # type: ignore[arg-type]
        expected = answer(await chat(whole, "Say hello", **params))
        got = answer(await chat(split, "Say hello", extra_headers={"x-request-id": rid}, **params))
    assert got == expected
    prefilled, decoded = both_legs(pd, rid)
    assert prefilled["request_id"] == decoded["request_id"]
    room = decoded["disaggregated_params"]
    assert prefilled["disaggregated_params"] == room
    assert (room["bootstrap_host"], room["bootstrap_port"]) == (pd.prefill[0], BOOTSTRAP_PORT)
    assert 0 <= room["bootstrap_room"] < 2**31


async def test_streamed_through_the_decode_worker(pd: Pd, shared: Deployment) -> None:
    options: dict[str, Any] = {"stream_options": {"include_usage": True}}
    async with api_client(shared) as whole, api_client(pd.gateway) as split:  # type: ignore[arg-type]
        expected = await chat_stream(whole, "Say hello", **options)
        got = await chat_stream(split, "Say hello", **options)
    assert streamed_text(got) == streamed_text(expected) and streamed_text(got)
    assert got[-1].usage == expected[-1].usage


async def test_every_request_gets_a_room_of_its_own(pd: Pd) -> None:
    rids = [new_rid("room") for _ in range(4)]
    async with api_client(pd.gateway) as client:  # type: ignore[arg-type]
        await asyncio.gather(
            *(chat(client, "hi", max_tokens=2, extra_headers={"x-request-id": rid}) for rid in rids)
        )
    rooms = {both_legs(pd, rid)[1]["disaggregated_params"]["bootstrap_room"] for rid in rids}
    assert len(rooms) == 4


async def test_a_client_that_leaves_aborts_the_decode_leg(pd: Pd) -> None:
    rid = new_rid("pd-drop")
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "[ref stall=1] wait"}]}
    async with aiohttp.ClientSession() as http:
        await drop_after_first_text(http, f"{pd.url}/v1/chat/completions", body, rid)

        def aborted() -> bool:
            return any(dispatched_as(a["request_id"], rid) for a in read_record(*pd.decode)["aborted"])

        await eventually(aborted)

        async def idle() -> bool:
            _, listing = await get_json(http, f"{pd.url}/workers")
            return all(w["load"] == 0 for w in listing["workers"])

        await eventually(idle)


async def test_the_workers_list_their_roles_and_readiness_needs_both(pd: Pd, model_dir: Path) -> None:
    async with aiohttp.ClientSession() as http:
        _, listing = await get_json(http, f"{pd.url}/workers")
    roles = {w["url"]: w["worker_type"] for w in listing["workers"]}
    assert roles == {
        f"grpc://{pd.prefill[0]}:{pd.prefill[1]}": "prefill",
        f"grpc://{pd.decode[0]}:{pd.decode[1]}": "decode",
    }
    # Only the prefill half is up: not ready, and a request says which half is missing.
    lonely = GatewayServer(pd_config(pd.prefill, ("127.0.0.1", 1), model_dir)).start()
    try:
        await eventually(lambda: lonely.get_json("/workers")[1]["stats"]["healthy_workers"] == 1)
        status, body = lonely.get_json("/readiness")
        assert (status, body["healthy_workers"]) == (503, 1)
        async with api_client(lonely) as client:  # type: ignore[arg-type]
            with pytest.raises(openai.APIStatusError, match="no healthy decode worker") as caught:
                await chat(client, "hi")
        assert caught.value.status_code == 503
    finally:
        lonely.stop()


async def test_a_decode_worker_refuses_a_request_without_its_room(pd: Pd, model_dir: Path) -> None:
    """A decode worker behind a gateway that does not know it is one: the engine's refusal, as a 400."""
    config = GatewayConfig(
        worker_urls=(WorkerUrl.parse(f"grpc://{pd.decode[0]}:{pd.decode[1]}"),),
        host="127.0.0.1",
        port=0,
        model_path=str(model_dir),
    )
    plain = GatewayServer(config).start()
    try:
        await asyncio.to_thread(plain.wait_ready, 1)
        async with api_client(plain) as client:  # type: ignore[arg-type]
            with pytest.raises(openai.BadRequestError, match="disaggregated_params"):
                await chat(client, "hi")
    finally:
        plain.stop()


def test_pd_on_the_command_line() -> None:
    from adapters import cli

    config = cli.parse_launch(
        ["--pd-disaggregation", "--prefill", "grpc://p1:50051", "8998", "--prefill", "grpc://p2:50051",
         "--decode", "grpc://d1:50052", "--decode", "grpc://d2:50052", "--model-path", "/m",
         "--prefill-policy", "round_robin", "--decode-policy", "power_of_two"]
    )  # fmt: skip
    assert config.pd_disaggregation and not config.worker_urls
    assert (config.prefill_policy, config.decode_policy) == ("round_robin", "power_of_two")
    assert [(u.url, port) for u, port in config.prefill] == [
        ("grpc://p1:50051", 8998),
        ("grpc://p2:50051", None),
    ]
    assert [u.url for u in config.decode] == ["grpc://d1:50052", "grpc://d2:50052"]
    specs = config.worker_specs()
    assert [(s.worker_type, s.bootstrap_port) for s in specs] == [
        ("prefill", 8998), ("prefill", None), ("decode", None), ("decode", None),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pd-disaggregation", "--decode", "grpc://d:1"], "at least one --prefill and one --decode"),
        (["--pd-disaggregation", "--prefill", "grpc://p:1", "--decode", "grpc://d:1", "--worker-urls", "grpc://w:1"],
         "cannot be combined"),
        (["--pd-disaggregation", "--prefill", "grpc://p:1", "--decode", "http://d:1"], "all grpc:// or all"),
        (["--pd-disaggregation", "--prefill", "grpc://p:1", "--decode", "grpc://d:1", "--backend", "trtllm"],
         "for trtllm workers"),
        (["--prefill", "grpc://p:1", "--decode", "grpc://d:1"], "need --pd-disaggregation"),
        (["--pd-disaggregation", "--prefill", "grpc://p:1", "x", "--decode", "grpc://d:1"], "not a number"),
    ],
)  # fmt: skip
def test_pd_command_lines_that_cannot_work_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapters import cli

    assert cli.main(["launch", *argv]) != 0
    assert message in capsys.readouterr().err


# ---- over HTTP workers (SGLang's HTTP servers in their PD roles; the gateway relays, as SMG) -----------


@pytest.fixture(scope="module")
async def http_pd(model_dir: Path) -> AsyncIterator[Pd]:
    async with (
        RefWorkerProcs(1, "--mode", "http", "--disaggregation-mode", "prefill") as [prefill],
        RefWorkerProcs(1, "--mode", "http", "--disaggregation-mode", "decode") as [decode],
    ):
        config = GatewayConfig(
            worker_urls=(),
            pd_disaggregation=True,
            prefill=((WorkerUrl.parse(f"http://{prefill[0]}:{prefill[1]}"), BOOTSTRAP_PORT),),
            decode=(WorkerUrl.parse(f"http://{decode[0]}:{decode[1]}"),),
            host="127.0.0.1",
            port=0,
        )
        gateway = GatewayServer(config).start()
        try:
            await asyncio.to_thread(gateway.wait_ready, 2)
            yield Pd(gateway, prefill, decode, http=True)
        finally:
            gateway.stop()


@pytest.mark.parametrize("stream", [False, True])
async def test_http_workers_split_the_same_way(http_pd: Pd, shared: Deployment, stream: bool) -> None:
    rid = new_rid("http-pd")
    async with api_client(shared) as whole, api_client(http_pd.gateway) as split:  # type: ignore[arg-type]
        if stream:
            expected = streamed_text(await chat_stream(whole, "Say hello"))
            got = streamed_text(await chat_stream(split, "Say hello", extra_headers={"x-request-id": rid}))
        else:
            expected = (await chat(whole, "Say hello")).choices[0].message.content
            reply = await chat(split, "Say hello", extra_headers={"x-request-id": rid})
            got = reply.choices[0].message.content
    assert got == expected and got
    prefilled, decoded = both_legs(http_pd, rid)
    fields = ("bootstrap_host", "bootstrap_port", "bootstrap_room")
    assert [prefilled[f] for f in fields] == [decoded[f] for f in fields]
    assert (decoded["bootstrap_host"], decoded["bootstrap_port"]) == (http_pd.prefill[0], BOOTSTRAP_PORT)
    assert 0 <= decoded["bootstrap_room"] < 2**63


async def test_prefill_and_decode_workers_join_at_run_time(pd: Pd, model_dir: Path) -> None:
    gateway = GatewayServer(pd_config(pd.prefill, pd.decode, model_dir)).start()
    try:
        await asyncio.to_thread(gateway.wait_ready, 2)
        async with (
            RefWorkerProcs(1, "--disaggregation-mode", "decode") as [(host, port)],
            aiohttp.ClientSession() as http,
        ):
            added = f"grpc://{host}:{port}"
            for body, param in (
                ({"url": added}, "worker_type"),  # a regular worker has no place here
                ({"url": added, "worker_type": "decode", "bootstrap_port": 1}, "bootstrap_port"),
            ):
                async with http.post(f"{gateway.url}/workers", json=body) as reply:
                    assert reply.status == 400 and (await reply.json())["error"]["param"] == param
            async with http.post(
                f"{gateway.url}/workers", json={"url": added, "worker_type": "decode"}
            ) as reply:
                assert reply.status == 202
                location = (await reply.json())["location"]

            async def ready() -> bool:
                _, worker = await get_json(http, f"{gateway.url}{location}")
                return worker["status"] == "ready" and worker["worker_type"] == "decode"

            await eventually(ready)
            rids = [new_rid("joined") for _ in range(4)]
            async with api_client(gateway) as client:  # type: ignore[arg-type]
                for rid in rids:
                    await chat(client, "hi", max_tokens=2, extra_headers={"x-request-id": rid})
            joined = [
                r
                for r in read_record(host, port)["recent_requests"]
                if any(dispatched_as(r["request_id"], rid) for rid in rids)
            ]
            assert joined and all(
                r["disaggregated_params"]["bootstrap_port"] == BOOTSTRAP_PORT for r in joined
            )
    finally:
        gateway.stop()


# ---- vLLM workers: prefill first, its KV handle then to the decode (NixlConnector) ----------------------


@pytest.fixture(scope="module")
async def vllm_pd(model_dir: Path) -> AsyncIterator[Pd]:
    async with (
        RefWorkerProcs(1, "--engine", "vllm", "--disaggregation-mode", "prefill") as [prefill],
        RefWorkerProcs(1, "--engine", "vllm", "--disaggregation-mode", "decode") as [decode],
    ):
        gateway = GatewayServer(pd_config(prefill, decode, model_dir)).start()
        try:
            await asyncio.to_thread(gateway.wait_ready, 2)
            yield Pd(gateway, prefill, decode)
        finally:
            gateway.stop()


@pytest.mark.parametrize("stream", [False, True])
async def test_vllm_workers_prefill_first_then_decode_with_its_handle(
    vllm_pd: Pd, shared: Deployment, stream: bool
) -> None:
    rid = new_rid("vllm-pd")
    async with api_client(shared) as whole, api_client(vllm_pd.gateway) as split:  # type: ignore[arg-type]
        if stream:
            expected = streamed_text(await chat_stream(whole, "Say hello", n=2))
            got = streamed_text(
                await chat_stream(split, "Say hello", n=2, extra_headers={"x-request-id": rid})
            )
        else:
            expected = answer(await chat(whole, "Say hello", n=2))
            got = answer(await chat(split, "Say hello", n=2, extra_headers={"x-request-id": rid}))
    assert got == expected and got
    prefilled, decoded = both_legs(vllm_pd, rid)
    assert prefilled["request_id"] == decoded["request_id"]
    params = prefilled["sampling_params"]
    assert (params["max_tokens"], params.get("n", 1), params["ignore_eos"]) == (1, 1, True)
    assert not prefilled.get("stream", False) and decoded.get("stream", False) == stream
    assert json.loads(prefilled["kv_transfer_params_json"]) == {
        "do_remote_decode": True,
        "do_remote_prefill": False,
    }
    handle = json.loads(decoded["kv_transfer_params_json"])  # the prefill worker's own, verbatim
    assert handle["do_remote_prefill"] is True and handle["remote_request_id"] == decoded["request_id"]
    assert handle["remote_engine_id"].startswith("refworker-") and handle["remote_host"] == vllm_pd.prefill[0]
