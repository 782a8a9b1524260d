"""Gateways over in-memory workers (``FakeClient``), for data-plane tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataplane.config import GatewayConfig, WorkerSpec, WorkerUrl
from dataplane.gateway import Gateway
from dataplane.types import Chunk, GenerateRequest, SamplingParams, WireRequest, WorkerInfo, WorkerMessage
from tests.fakes.worker import FakeClient, Script, complete

MODEL = "test/model"
EOS = 151645


def hello(request: WireRequest) -> Sequence[WorkerMessage]:
    return [Chunk(0, [9707], len(request.input_ids), 1, 0), complete([EOS], matched=EOS)]


def info(model_dir: Path, name: str = MODEL) -> WorkerInfo:
    return WorkerInfo(name, str(model_dir), str(model_dir), 32768, (EOS,), "default")


def url(i: int) -> str:
    return f"grpc://127.0.0.1:{9000 + i}"


class Fleet:
    """The fake workers a gateway can reach, by url: the gateway's client factory."""

    def __init__(self) -> None:
        self.clients: dict[str, FakeClient] = {}

    def add(self, i: int, script: Script, worker_info: WorkerInfo, **options: Any) -> FakeClient:
        client = self.clients[url(i)] = FakeClient(f"w{i}", script, worker_info, **options)
        return client

    def __call__(self, spec: WorkerSpec) -> FakeClient:
        return self.clients[spec.url.url]


async def until(check: Any, timeout: float = 5.0) -> None:
    """Poll ``check()`` until truthy (state that background tasks reach)."""
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.002)


async def started_gateway(
    model_dir: Path, scripts: list[Script], fleet: Fleet | None = None, **config: Any
) -> Gateway:
    """A started gateway over one fake worker per script, every one of them ready."""
    fleet = fleet or Fleet()
    for i, script in enumerate(scripts):
        if url(i) not in fleet.clients:
            fleet.add(i, script, info(model_dir))
    config.setdefault("disable_health_check", True)
    config.setdefault("retry_initial_backoff_ms", 1.0)
    urls = tuple(WorkerUrl.parse(url(i)) for i in range(len(scripts)))
    gateway = Gateway(GatewayConfig(worker_urls=urls, **config), client_factory=fleet)
    await gateway.start()
    await until(lambda: gateway.registry.ready_count() == len(scripts), timeout=10)
    return gateway


def chat(content: str = "hi", **fields: Any) -> GenerateRequest:
    sampling = {k: fields.pop(k) for k in list(fields) if k in SamplingParams.__dataclass_fields__}
    return GenerateRequest(
        request_id=fields.pop("request_id", "req-1"),
        model=fields.pop("model", MODEL),
        sampling=SamplingParams(**sampling),
        messages=({"role": "user", "content": content},),
        **fields,
    )


def client(gateway: Gateway, i: int) -> FakeClient:
    c = gateway.registry.all()[i].client
    assert isinstance(c, FakeClient)
    return c
