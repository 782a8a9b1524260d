"""Directives, fault injection, Abort, cancellation, prefix cache and the unary RPCs, over the wire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from tokenizers import Tokenizer

from refworker.scripts import tool_text
from refworker.server import RefWorker
from tests.refworker.calls import EOS, collect, completes, make_request, prompt, streamed_ids
from tests.refworker.conftest import StartWorker


async def eventually(worker: RefWorker, condition: Callable[[], bool]) -> None:
    """Wait for a condition the server reaches on its own (cancellation arrives asynchronously)."""
    async with asyncio.timeout(5):
        await worker.engine.wait_until(condition)


async def test_directive_selects_script_and_filler_count(stub: Any, tokenizer: Tokenizer) -> None:
    ids = prompt(tokenizer, "user text [ref script=filler tokens=12]")
    messages = await collect(stub, make_request(ids, max_new_tokens=100))
    assert len(streamed_ids(messages)) == 13


async def test_last_directive_wins_and_tool_name_is_set(stub: Any, tokenizer: Tokenizer) -> None:
    ids = prompt(tokenizer, "[ref script=echo] then [ref script=tool tool=lookup_stock]")
    messages = await collect(stub, make_request(ids))
    assert tokenizer.decode(streamed_ids(messages)[:-1]) == tool_text("lookup_stock")


async def test_echo_directive_repeats_the_prompt(stub: Any, tokenizer: Tokenizer) -> None:
    ids = prompt(tokenizer, "repeat me [ref script=echo]")
    messages = await collect(stub, make_request(ids))
    assert streamed_ids(messages) == [*ids, EOS]


async def test_chunk_directive(stub: Any, tokenizer: Tokenizer) -> None:
    ids = prompt(tokenizer, "[ref chunk=3]")
    messages = await collect(stub, make_request(ids))
    sizes = [len(m.chunk.token_ids) for m in messages if m.HasField("chunk")]
    assert set(sizes[:-1]) == {3}


async def test_random_chunk_directive_with_seed(stub: Any, tokenizer: Tokenizer) -> None:
    ids = prompt(tokenizer, "[ref chunk=random seed=7]")
    first = await collect(stub, make_request(ids, rid="a"))
    second = await collect(stub, make_request(ids, rid="b"))

    def sizes(messages: list[Any]) -> list[int]:
        return [len(m.chunk.token_ids) for m in messages if m.HasField("chunk")]

    assert sizes(first) == sizes(second) and len(set(sizes(first))) > 1


@pytest.mark.parametrize(
    ("directive", "bad_key"),
    [("[ref colour=red]", "colour"), ("[ref tokens=many]", "tokens"), ("[ref fail=NOPE]", "fail")],
)
async def test_bad_directive_is_invalid_argument(
    stub: Any, tokenizer: Tokenizer, directive: str, bad_key: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub, make_request(prompt(tokenizer, directive)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_key in (info.value.details() or "")


async def test_fail_directive_aborts_with_that_status(stub: Any, tokenizer: Tokenizer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub, make_request(prompt(tokenizer, "[ref fail=UNAVAILABLE]")))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and info.value.details() == "injected failure"


async def test_fail_after_breaks_the_stream_mid_way(stub: Any, tokenizer: Tokenizer) -> None:
    call = stub.Generate(make_request(prompt(tokenizer, "[ref fail_after=3]")))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for message in call:
            received.append(message)
    assert len(received) == 3 and info.value.code() == grpc.StatusCode.INTERNAL


async def test_ttft_directive_delays_the_first_message(stub: Any, tokenizer: Tokenizer) -> None:
    started = time.monotonic()
    await collect(stub, make_request(prompt(tokenizer, "[ref ttft_ms=60]"), max_new_tokens=2))
    assert time.monotonic() - started >= 0.06


async def test_stall_then_abort_ends_the_stream(start_worker: StartWorker, tokenizer: Tokenizer) -> None:
    worker, stub = await start_worker()
    call = stub.Generate(make_request(prompt(tokenizer, "[ref stall=1]"), rid="stalled", n=2))
    first = await call.read()
    assert first.HasField("chunk")
    response = await stub.Abort(pb.AbortRequest(request_id="stalled", reason="test abort"))
    assert response.success
    rest = []
    while (message := await call.read()) is not grpc.aio.EOF:
        rest.append(message)
    assert await call.code() == grpc.StatusCode.OK
    done = completes(rest)
    assert {d.finish_reason for d in done.values()} == {"abort"} and sorted(done) == [0, 1]
    assert done[0].completion_tokens == 1 and done[1].completion_tokens == 0
    record = worker.engine.record.to_dict()
    assert {"request_id": "stalled", "reason": "test abort", "found": True} in record["aborted"]
    assert not worker.engine.live


async def test_abort_of_unknown_request(stub: Any) -> None:
    response = await stub.Abort(pb.AbortRequest(request_id="nobody", reason="x"))
    assert not response.success and response.message == "not found"


async def test_client_cancel_is_recorded(start_worker: StartWorker, tokenizer: Tokenizer) -> None:
    worker, stub = await start_worker()
    call = stub.Generate(make_request(prompt(tokenizer, "[ref stall=1]"), rid="gone"))
    await call.read()
    call.cancel()
    await eventually(worker, lambda: "gone" in worker.engine.record.cancelled)
    assert not worker.engine.live


async def test_abort_during_latency_wait(start_worker: StartWorker, tokenizer: Tokenizer) -> None:
    worker, stub = await start_worker(ttft_ms=60_000)
    call = stub.Generate(make_request(prompt(tokenizer, "hi"), rid="slow", stream=False))
    await eventually(worker, lambda: "slow" in worker.engine.live)
    assert (await stub.Abort(pb.AbortRequest(request_id="slow", reason="r"))).success
    message = await call.read()
    assert message.complete.finish_reason == "abort"


async def test_prefix_cache_reports_cached_tokens(stub: Any, tokenizer: Tokenizer) -> None:
    long_prompt = prompt(tokenizer, "The system prompt is long enough to fill several blocks. " * 8)
    assert len(long_prompt) >= 64
    first = completes(await collect(stub, make_request(long_prompt, stream=False)))[0]
    second_messages = await collect(stub, make_request(long_prompt, rid="req-2"))
    second = completes(second_messages)[0]
    assert first.cached_tokens == 0
    assert second.cached_tokens == len(long_prompt) // 16 * 16
    assert all(m.chunk.cached_tokens == second.cached_tokens for m in second_messages if m.HasField("chunk"))
    other = prompt(tokenizer, "A different conversation entirely, which shares nothing. " * 8)
    assert completes(await collect(stub, make_request(other, rid="req-3")))[0].cached_tokens == 0


async def test_model_info(stub: Any) -> None:
    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.served_model_name == "Qwen/Qwen3-0.6B" and info.is_generation
    assert list(info.eos_token_ids) == [EOS] and info.vocab_size > 150_000
    assert info.max_context_length == 131072 and info.weight_version == "default"
    assert info.tokenizer_path == info.model_path and info.pad_token_id == 151643


async def test_server_info_carries_the_record(start_worker: StartWorker, tokenizer: Tokenizer) -> None:
    _, stub = await start_worker()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await collect_with_metadata(stub, make_request([1, 2, 3], rid="traced"), (("traceparent", traceparent),))
    info = await stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.server_type == "grpc" and info.sglang_version == "refworker-0.1" and info.active_requests == 0
    record = dict(info.scheduler_info)
    assert list(record["received"]) == ["traced"]
    request = record["recent_requests"][0]
    assert request["request_id"] == "traced" and list(request["tokenized"]["input_ids"]) == [1, 2, 3]
    assert record["metadata"][0]["traceparent"] == traceparent


async def collect_with_metadata(stub: Any, request: Any, metadata: tuple[tuple[str, str], ...]) -> list[Any]:
    return [message async for message in stub.Generate(request, metadata=metadata)]


async def test_loads_count_running_requests(start_worker: StartWorker, tokenizer: Tokenizer) -> None:
    _, stub = await start_worker()
    call = stub.Generate(make_request(prompt(tokenizer, "[ref stall=1]"), rid="busy"))
    await call.read()
    loads = await stub.GetLoads(pb.GetLoadsRequest(include=["core"]))
    assert len(loads.loads) == 1 and loads.loads[0].num_running_reqs == 1
    assert loads.loads[0].max_running_requests == 256 and loads.aggregate.total_running_reqs == 1
    assert loads.loads[0].token_usage > 0
    call.cancel()


async def test_health_rpcs(start_worker: StartWorker) -> None:
    worker, stub = await start_worker()
    health = await stub.HealthCheck(pb.HealthCheckRequest())
    assert health.healthy and health.message == "ok"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        checker = health_pb2_grpc.HealthStub(channel)
        for service in ("", "sglang.grpc.scheduler.SglangScheduler"):
            status = await checker.Check(health_pb2.HealthCheckRequest(service=service))
            assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_unimplemented_rpcs(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Embed(pb.EmbedRequest(request_id="e"))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_port_zero_and_stop(start_worker: StartWorker) -> None:
    worker, _ = await start_worker()
    assert isinstance(worker, RefWorker) and worker.port and worker.port > 0
    await worker.stop()
