"""Workers coming and going: adding, draining, removing, failing; models; loads and KV events wired in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from dataplane.config import GatewayConfig, WorkerSpec, WorkerUrl
from dataplane.errors import ConfigError, ModelNotFound, WorkerError
from dataplane.gateway import Gateway
from dataplane.routing import KvIndex
from dataplane.types import (
    Chunk,
    EngineLoad,
    KvBlock,
    KvEventBatch,
    KvStored,
    Started,
    WireRequest,
    WorkerInfo,
    WorkerMessage,
)
from tests.dataplane.gateways import EOS, MODEL, Fleet, chat, hello, info, started_gateway, until, url
from tests.fakes.worker import complete


@contextlib.asynccontextmanager
async def gateway(
    model_dir: Path, count: int, fleet: Fleet | None = None, **config: Any
) -> AsyncGenerator[Gateway, None]:
    gw = await started_gateway(model_dir, [hello] * count, fleet, **config)
    try:
        yield gw
    finally:
        await gw.stop()


def served(fleet: Fleet) -> list[int]:
    return [len(fleet.clients[url(i)].requests) for i in range(len(fleet.clients))]


async def test_an_added_worker_registers_and_takes_traffic(model_dir: Path) -> None:
    fleet = Fleet()
    async with gateway(model_dir, 1, fleet) as gw:
        fleet.add(1, hello, info(model_dir))
        worker = gw.add_worker(WorkerSpec(WorkerUrl.parse(url(1)), labels={"zone": "b"}))
        assert worker.status == "pending" and worker.id == WorkerUrl.parse(url(1)).worker_id
        await until(lambda: worker.status == "ready")
        for _ in range(4):
            await gw.collect(chat())
        assert served(fleet) == [2, 2]
        assert worker.labels == {"served_model_name": MODEL, "weight_version": "default", "zone": "b"}


@pytest.mark.parametrize("spelling", ["grpc://127.0.0.1:9000", "127.0.0.1:9000", "GRPC://127.0.0.1:9000/"])
async def test_one_address_is_one_worker(model_dir: Path, spelling: str) -> None:
    async with gateway(model_dir, 1) as gw:
        with pytest.raises(Exception, match="already registered"):
            gw.add_worker(WorkerSpec(WorkerUrl.parse(spelling)))
        assert len(gw.registry.all()) == 1


async def test_worker_ids_are_url_safe_and_stable() -> None:
    ids = {WorkerUrl.parse(u).worker_id for u in ("grpc://a:1", "a:1", "grpc://A:1/")}
    assert len(ids) == 1
    (worker_id,) = ids
    assert len(worker_id) == 16 and worker_id.isalnum()
    assert WorkerUrl.parse("http://a:1").worker_id != worker_id


async def test_draining_takes_no_new_requests_lets_in_flight_finish_then_removes(model_dir: Path) -> None:
    gate = asyncio.Event()

    def slow(_: WireRequest) -> list[WorkerMessage | asyncio.Event]:
        return [Chunk(0, [9707], 3, 1, 0), gate, complete([EOS], matched=EOS)]

    fleet = Fleet()
    fleet.add(0, slow, info(model_dir))
    async with gateway(model_dir, 2, fleet, policy="cache_aware") as gw:
        first = gw.registry.all()[0]
        stream = gw.generate(chat())
        assert isinstance(await anext(stream), Started)
        gw.drain(first)
        assert first.status == "draining" and first not in gw.registry.routable(MODEL)
        for _ in range(3):
            await gw.collect(chat("other"))  # all on the second worker
        assert served(fleet) == [1, 3]
        assert gw.registry.get(first.id) is first and not fleet.clients[url(0)].closed
        gate.set()
        rest = [event async for event in stream]
        assert rest and fleet.clients[url(0)].aborted == []  # finished normally
        await until(lambda: gw.registry.get(first.id) is None)
        assert fleet.clients[url(0)].closed and first.load == 0


async def test_draining_an_idle_worker_removes_it_and_forgets_its_kv_events(model_dir: Path) -> None:
    stored = KvEventBatch(1, (KvStored((KvBlock(11, tuple(range(16))),), None),))
    fleet = Fleet()
    fleet.add(0, hello, info(model_dir), kv_streams=[[stored, asyncio.Event()]])
    async with gateway(model_dir, 1, fleet, policy="cache_aware") as gw:
        index = gw.policy.kv_events
        assert isinstance(index, KvIndex)
        await until(lambda: index.has_events(url(0)))  # the sink knows the worker by its url
        gw.drain(gw.registry.all()[0])
        await until(lambda: not gw.registry.all())
        assert not index.has_events(url(0))
        assert fleet.clients[url(0)].kv_starts == [0]


async def test_models_come_from_the_workers(model_dir: Path) -> None:
    fleet = Fleet()
    async with gateway(model_dir, 1, fleet, served_model_name="configured/name") as gw:
        fleet.add(1, hello, info(model_dir, "other/model"))
        added = gw.add_worker(WorkerSpec(WorkerUrl.parse(url(1))))
        await until(lambda: added.status == "ready")
        # --served-model-name names the command line's workers only.
        assert sorted(m.id for m in gw.models()) == ["configured/name", "other/model"]
        for _ in range(3):
            await gw.collect(chat(model="other/model"))
        assert served(fleet) == [0, 3]
        gw.drain(added)
        await until(lambda: len(gw.registry.all()) == 1)
        assert [m.id for m in gw.models()] == ["configured/name"]
        with pytest.raises(ModelNotFound):
            gw.model("other/model")


@pytest.mark.parametrize("remove", [False, True])
async def test_failed_workers_stay_listed_unless_removal_is_asked_for(model_dir: Path, remove: bool) -> None:
    fleet = Fleet()
    sick = fleet.add(0, hello, info(model_dir), healthy=False)  # registers, then fails every probe
    config = GatewayConfig(
        worker_urls=(WorkerUrl.parse(url(0)),),
        model_path=str(model_dir),
        health_check_interval_secs=0.002,
        health_failure_threshold=1,
        remove_unhealthy_workers=remove,
    )
    gw = Gateway(config, client_factory=fleet)
    statuses: list[str] = []
    gw.registry.on_change(lambda: statuses.extend(w.status for w in gw.registry.all()))
    await gw.start()
    try:
        if remove:
            await until(lambda: not gw.registry.all())
            assert sick.closed
        else:
            await until(lambda: gw.registry.all()[0].status == "failed")
            await asyncio.sleep(0.02)
            assert gw.registry.all()[0].status == "failed" and not sick.closed  # terminal, still listed
        assert list(dict.fromkeys(statuses))[:4] == ["pending", "ready", "not_ready", "failed"]
    finally:
        await gw.stop()


async def test_a_worker_that_never_registers_fails_after_its_probes(model_dir: Path) -> None:
    fleet = Fleet()
    unreachable = fleet.add(0, hello, info(model_dir))

    async def no_info(timeout: float) -> WorkerInfo:
        raise WorkerError("connection refused", status=503)

    unreachable.model_info = no_info  # type: ignore[method-assign]
    unreachable.healthy = False
    config = GatewayConfig(
        worker_urls=(WorkerUrl.parse(url(0)),), health_check_interval_secs=0.002, health_failure_threshold=2
    )
    gw = Gateway(config, client_factory=fleet)
    await gw.start()
    try:
        worker = gw.registry.all()[0]
        await until(lambda: worker.status == "failed")
        assert worker.pending_probes == 20
    finally:
        await gw.stop()


async def test_load_aware_policies_get_the_workers_loads(model_dir: Path) -> None:
    fleet = Fleet()
    fleet.add(0, hello, info(model_dir), loads=EngineLoad(3, 1, 0.5, received_at=0.0))
    fleet.add(1, hello, info(model_dir), loads=EngineLoad(1, 0, 0.1, received_at=0.0))
    async with gateway(model_dir, 2, fleet, policy="power_of_two", load_monitor_interval=0.005) as gw:
        await until(lambda: all(w.engine_load is not None for w in gw.registry.all()))
        loads = [w.describe()["engine_load"] for w in gw.registry.all()]
        assert [load["running_requests"] for load in loads] == [3, 1]  # type: ignore[index]
        for _ in range(4):
            await gw.collect(chat())
        assert served(fleet) == [0, 4]  # the lower KV usage wins every pair


async def test_policies_without_load_needs_do_not_poll(model_dir: Path) -> None:
    fleet = Fleet()
    fleet.add(0, hello, info(model_dir), loads=EngineLoad(3, 1, 0.5))
    async with gateway(model_dir, 1, fleet, policy="round_robin", load_monitor_interval=0.001):
        await asyncio.sleep(0.02)
    assert fleet.clients[url(0)].loads_polled == 0


async def test_a_policy_the_routing_package_has_not_built_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataplane.gateway as gateway_module

    def not_built(name: str, config: object = None) -> object:
        raise NotImplementedError(f"policy {name} is not built yet")

    monkeypatch.setattr(gateway_module, "make_policy", not_built)
    with pytest.raises(ConfigError, match="policy least_load is not supported yet"):
        Gateway(GatewayConfig(worker_urls=(WorkerUrl.parse(url(0)),), policy="least_load"))
