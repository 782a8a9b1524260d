from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import grpc
import pytest
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc
from smg_grpc_proto.generated import trtllm_service_pb2_grpc as trtllm_grpc
from smg_grpc_proto.generated import vllm_engine_pb2_grpc as vllm_grpc
from tokenizers import Tokenizer

from refworker.config import WorkerConfig, default_model_path
from refworker.model import ModelFiles
from refworker.server import RefWorker

StartWorker = Callable[..., Awaitable[tuple[RefWorker, Any]]]
# The client stub of each engine service the reference worker can serve (``--engine``).
STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "sglang": pb_grpc.SglangSchedulerStub,
    "vllm": vllm_grpc.VllmEngineStub,
    "trtllm": trtllm_grpc.TrtllmServiceStub,
}


@pytest.fixture(scope="session")
def model() -> ModelFiles:
    return ModelFiles.load(default_model_path())


@pytest.fixture(scope="session")
def tokenizer(model: ModelFiles) -> Tokenizer:
    return model.tokenizer


@pytest.fixture
async def start_worker(model: ModelFiles) -> AsyncIterator[StartWorker]:
    """Start in-process gRPC workers on port 0: ``worker, stub = await start_worker(script="echo")``; the
    stub is the engine's (``engine="vllm"``: vLLM's)."""
    workers: list[RefWorker] = []
    channels: list[grpc.aio.Channel] = []

    async def start(**overrides: Any) -> tuple[RefWorker, Any]:
        worker = RefWorker(replace(WorkerConfig(port=0), **overrides), model=model)
        workers.append(worker)
        port = await worker.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return worker, STUBS[worker.config.engine](channel)

    yield start
    for channel in channels:
        await channel.close()
    for worker in workers:
        await worker.stop(grace=0)


@pytest.fixture
async def stub(start_worker: StartWorker) -> Any:
    _, stub = await start_worker()
    return stub
