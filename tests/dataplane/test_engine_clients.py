"""Which client a gRPC worker gets: named, or found out by asking SGLang's service and then vLLM's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from dataplane.client import SglangClient
from dataplane.engine_clients import DetectingClient, engine_client
from dataplane.errors import WorkerError
from dataplane.trtllm_client import TrtllmClient
from dataplane.vllm_client import VllmClient
from refworker.config import WorkerConfig
from refworker.server import RefWorker


def test_a_named_runtime_gets_its_client() -> None:
    for runtime, kind in (
        ("sglang", SglangClient),
        ("vllm", VllmClient),
        ("trtllm", TrtllmClient),
        ("auto", DetectingClient),
    ):
        client = engine_client("127.0.0.1", 1, None, runtime)  # type: ignore[arg-type]
        assert isinstance(client, kind) and client.runtime == runtime
        client.close()


CLIENTS = {"sglang": SglangClient, "vllm": VllmClient, "trtllm": TrtllmClient}


@pytest.fixture(params=list(CLIENTS))
async def worker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, int]]:
    ref = RefWorker(WorkerConfig(host="127.0.0.1", port=0, engine=request.param))
    port = await ref.start()
    yield request.param, port
    await ref.stop(grace=0)


async def test_the_engine_is_found_out_at_the_first_model_info(worker: tuple[str, int]) -> None:
    engine, port = worker
    client = DetectingClient("127.0.0.1", port, None)
    try:
        assert client.runtime == "auto"
        with pytest.raises(WorkerError, match="not known yet"):
            await client.get_loads(1.0)
        info = await client.model_info(5.0)
        assert info.model_path and info.max_context_length > 0
        assert client.runtime == engine
        assert type(client.detected) is CLIENTS[engine]
        assert await client.health(5.0)
        loads = await client.get_loads(5.0)
        assert (loads is None) == (engine == "trtllm")  # TRT-LLM's service has no GetLoads
    finally:
        client.close()


async def test_a_health_probe_before_registration_finds_the_engine_too(worker: tuple[str, int]) -> None:
    engine, port = worker
    client = DetectingClient("127.0.0.1", port, None)
    try:
        assert await client.health(5.0)
        assert client.runtime == engine
    finally:
        client.close()


async def test_a_server_with_neither_service_is_refused_clearly() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = DetectingClient("127.0.0.1", port, None)
    try:
        with pytest.raises(WorkerError, match="serves none of SGLang's, vLLM's and TensorRT-LLM's") as caught:
            await client.model_info(5.0)
        assert caught.value.status == 501
        assert not await client.health(5.0)
        assert client.runtime == "auto"
    finally:
        client.close()
        await server.stop(grace=None)


async def test_an_unreachable_worker_is_not_taken_for_a_wrong_engine() -> None:
    client = DetectingClient("127.0.0.1", 1, None)
    with pytest.raises(WorkerError) as caught:
        await client.model_info(2.0)
    assert caught.value.status == 503 and client.runtime == "auto"
    client.close()
