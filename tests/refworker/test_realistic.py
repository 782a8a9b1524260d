"""Realistic mode over the wire: prefix cache hits, eviction, queueing, loads, prefill time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from smg_grpc_proto.generated import common_pb2 as common
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb

from tests.refworker.calls import collect, completes, make_request
from tests.refworker.conftest import StartWorker

# Fast enough for tests: prefill is near free, a decode step takes 1 ms.
FAST: dict[str, Any] = {
    "realistic": True,
    "prefill_tps": 1e6,
    "decode_base_ms": 1.0,
    "decode_per_req_ms": 0.0,
}


def ids(start: int, count: int) -> list[int]:
    return list(range(start, start + count))


async def cached(stub: Any, prompt: list[int], rid: str, max_new_tokens: int = 4) -> int:
    messages = await collect(stub, make_request(prompt, rid=rid, max_new_tokens=max_new_tokens))
    complete = completes(messages)[0]
    assert all(m.chunk.cached_tokens == complete.cached_tokens for m in messages if m.HasField("chunk"))
    return int(complete.cached_tokens)


async def test_cached_tokens_grow_with_a_repeated_prefix(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST)
    system = ids(1000, 100)
    assert await cached(stub, system, "a") == 0
    assert await cached(stub, system, "b") == 96  # six full blocks
    turn = system + ids(5000, 40)
    assert await cached(stub, turn, "c") == 96
    assert await cached(stub, [*turn, *ids(7000, 20)], "d") == 128  # turn "c" cached its blocks too


async def test_output_blocks_join_the_cache(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST, script="filler", filler_tokens=64)
    prompt = ids(1000, 32)
    messages = await collect(stub, make_request(prompt, rid="a", max_new_tokens=40, ignore_eos=True))
    output = [t for m in messages if m.HasField("chunk") for t in m.chunk.token_ids]
    assert await cached(stub, prompt + output + [9], "b") == 64  # 32 prompt + 39 computed output tokens


async def test_eviction_under_a_tiny_cache(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST, kv_tokens=128)
    first, second = ids(1000, 64), ids(3000, 64)
    await cached(stub, first, "a", max_new_tokens=8)
    assert await cached(stub, first, "b", max_new_tokens=8) == 64
    # 64 + 8 tokens must fit next to the first prompt's 64: its last block goes.
    assert await cached(stub, second, "c", max_new_tokens=8) == 0
    assert await cached(stub, first, "d", max_new_tokens=8) == 48


async def test_a_request_larger_than_the_cache_is_refused(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST, kv_tokens=64)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub, make_request(ids(1000, 60), max_new_tokens=8))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_loads_follow_running_and_waiting_requests(start_worker: StartWorker) -> None:
    # Ten seconds of decoding each, unless cancelled.
    worker, stub = await start_worker(**{**FAST, "decode_base_ms": 10.0}, max_running=2, kv_tokens=4096)

    def start(i: int) -> Any:
        request = make_request(ids(1000 * (i + 1), 40), rid=f"r{i}", max_new_tokens=1000, ignore_eos=True)
        return stub.Generate(request)

    idle = (await stub.GetLoads(pb.GetLoadsRequest())).loads[0]
    assert idle.max_total_num_tokens == 4096 and idle.max_running_requests == 2
    calls = [start(0), start(1)]
    await calls[0].read()
    await calls[1].read()
    calls.append(start(2))
    async with asyncio.timeout(5):
        await worker.engine.wait_until(lambda: len(worker.engine.live) == 3)
    load = (await stub.GetLoads(pb.GetLoadsRequest(include=["all"]))).loads[0]
    assert (load.num_running_reqs, load.num_waiting_reqs) == (2, 1)
    assert load.num_waiting_uncached_tokens == 40
    assert load.num_used_tokens >= 2 * 40 and load.token_usage == load.num_used_tokens / 4096
    for call in calls[:2]:
        call.cancel()
    await calls[2].read()  # admitted once the others left
    calls[2].cancel()
    async with asyncio.timeout(5):
        await worker.engine.wait_until(lambda: not worker.engine.live)
    load = (await stub.GetLoads(pb.GetLoadsRequest())).loads[0]
    assert (load.num_running_reqs, load.num_waiting_reqs, load.num_used_tokens) == (0, 0, 0)
    assert load.gen_throughput > 0 and load.cache_hit_rate == 0.0


async def test_default_mode_loads_report_throughput_and_hit_rate(start_worker: StartWorker) -> None:
    _, stub = await start_worker()
    prompt = ids(1000, 32)
    for rid in ("a", "b"):
        await collect(stub, make_request(prompt, rid=rid, max_new_tokens=4))
    load = (await stub.GetLoads(pb.GetLoadsRequest())).loads[0]
    assert load.cache_hit_rate == pytest.approx(0.5) and load.gen_throughput > 0
    assert load.num_running_reqs == 0 and load.max_total_num_tokens == 1_000_000


async def ttft(stub: Any, prompt: list[int], rid: str) -> float:
    started = time.perf_counter()
    call = stub.Generate(make_request(prompt, rid=rid, max_new_tokens=1))
    await call.read()
    elapsed = time.perf_counter() - started
    while await call.read() is not grpc.aio.EOF:
        pass
    return elapsed


async def test_prefill_time_scales_with_uncached_tokens(start_worker: StartWorker) -> None:
    # 2,000 uncached tokens at 20,000 tokens/s take 100 ms; cached, 16 tokens take under 1 ms.
    _, stub = await start_worker(**{**FAST, "prefill_tps": 20_000.0})
    prompt = ids(1000, 2000)
    cold = await ttft(stub, prompt, "cold")
    warm = await ttft(stub, prompt, "warm")
    assert cold >= 0.1 > warm


async def test_decode_steps_slow_down_with_the_batch(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**{**FAST, "decode_base_ms": 0.0, "decode_per_req_ms": 2.0})

    async def duration(count: int) -> float:
        started = time.perf_counter()
        requests = [
            make_request(ids(1000 + 100 * i, 8), rid=f"b{count}-{i}", max_new_tokens=20) for i in range(count)
        ]
        await asyncio.gather(*(collect(stub, r) for r in requests))
        return time.perf_counter() - started

    # 19 decode steps: 2 ms each alone, 16 ms each with eight running.
    alone, batched = await duration(1), await duration(8)
    assert batched > max(alone, 0.15)


async def test_flush_cache_forgets_cached_prefixes(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST)
    prompt = ids(1000, 32)
    await cached(stub, prompt, "a")
    response = await stub.FlushCache(common.FlushCacheRequest())
    assert response.success
    assert await cached(stub, prompt, "b") == 0


async def test_served_request_counter(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST)
    for rid in ("a", "b", "c"):
        await collect(stub, make_request(ids(1000, 8), rid=rid, max_new_tokens=2))
    info = await stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.scheduler_info["served_requests"] == 3
    assert info.server_args["refworker_realistic"] is True
