"""SubscribeKvEvents over the wire: stored/removed/cleared events, resume, snapshots, subscribers."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from smg_grpc_proto.generated import common_pb2 as common

from tests.refworker.calls import collect, make_request, next_batch, prompt, removed_hashes, stored_blocks
from tests.refworker.conftest import StartWorker
from tests.refworker.test_realistic import FAST, ids

MODES = [pytest.param({}, id="default"), pytest.param(FAST, id="realistic")]


def subscribe(stub: Any, start: int = 0, load_first: bool = False) -> Any:
    request = common.SubscribeKvEventsRequest(
        start_sequence_number=start, load_records_before_first_batch=load_first
    )
    return stub.SubscribeKvEvents(request)


async def generate(stub: Any, prompt: list[int], rid: str) -> None:
    await collect(stub, make_request(prompt, rid=rid, max_new_tokens=2))


async def batches(call: Any, count: int) -> list[Any]:
    return [await next_batch(call) for _ in range(count)]


@pytest.mark.parametrize("mode", MODES)
async def test_stored_events_carry_the_prompt_blocks(start_worker: StartWorker, mode: dict[str, Any]) -> None:
    _, stub = await start_worker(**mode)
    call = subscribe(stub)
    prompt = ids(1000, 40)
    await generate(stub, prompt, "a")
    batch = await next_batch(call)
    assert batch.sequence_number == 1 and batch.HasField("load")
    (event,) = batch.events
    assert event.event_id == 1 and not event.stored.HasField("parent_block_hash")
    assert [list(b.token_ids) for b in event.stored.blocks] == [prompt[:16], prompt[16:32]]
    assert {b.block_size for b in event.stored.blocks} == {16}
    # A longer prompt stores its new blocks as one chain under the last cached one.
    await generate(stub, [*prompt, *ids(2000, 20)], "b")
    (event,) = (await next_batch(call)).events
    assert event.stored.parent_block_hash == batch.events[0].stored.blocks[-1].block_hash
    assert [list(b.token_ids) for b in event.stored.blocks] == [[*prompt[32:], *ids(2000, 8)]]
    call.cancel()


@pytest.mark.parametrize("mode", [pytest.param({"kv_tokens": 128, **FAST}, id="realistic")])
async def test_evicted_blocks_are_removed(start_worker: StartWorker, mode: dict[str, Any]) -> None:
    _, stub = await start_worker(**mode)
    call = subscribe(stub)
    await collect(stub, make_request(ids(1000, 64), rid="a", max_new_tokens=8))
    first = stored_blocks(await next_batch(call))
    await collect(stub, make_request(ids(3000, 64), rid="b", max_new_tokens=8))
    events = await next_batch(call)
    if not removed_hashes(events):  # evictions and the next store may be one step apart
        events = await next_batch(call)
    assert removed_hashes(events) == [first[-1][0]]
    call.cancel()


async def test_resume_replays_without_duplicates(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST)
    for i in range(3):
        await generate(stub, ids(1000 * (i + 1), 16), f"r{i}")
    from_start = subscribe(stub)
    assert [b.sequence_number for b in await batches(from_start, 3)] == [1, 2, 3]
    resumed = subscribe(stub, start=1)
    assert [b.sequence_number for b in await batches(resumed, 2)] == [2, 3]
    await generate(stub, ids(9000, 16), "live")
    for call in (from_start, resumed):
        batch = await next_batch(call)
        assert batch.sequence_number == 4 and stored_blocks(batch)[0][1] == ids(9000, 16)
        call.cancel()
    current = subscribe(stub, start=4)
    await generate(stub, ids(9100, 16), "next")
    assert (await next_batch(current)).sequence_number == 5
    current.cancel()


async def test_two_subscribers_get_every_batch(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST)
    calls = [subscribe(stub), subscribe(stub)]
    for i in range(4):
        await generate(stub, ids(1000 * (i + 1), 32), f"r{i}")
    seen = [[(b.sequence_number, stored_blocks(b)) for b in await batches(call, 4)] for call in calls]
    assert seen[0] == seen[1] and [s for s, _ in seen[0]] == [1, 2, 3, 4]
    for call in calls:
        call.cancel()


async def test_a_cursor_older_than_the_history_gets_a_snapshot(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST, kv_event_history=2)
    prompts = [ids(1000 * (i + 1), 32) for i in range(4)]
    for i, text_ids in enumerate(prompts):
        await generate(stub, text_ids, f"r{i}")
    # 0: the history no longer reaches back to batch 1 either.
    calls = [subscribe(stub, start=1), subscribe(stub, start=0)]
    for call in calls:
        snapshot = await next_batch(call)
        assert snapshot.sequence_number == 4 and snapshot.snapshot.count == 1
        assert snapshot.snapshot.blocks == 8 and snapshot.events[0].HasField("cleared")
        assert {e.event_id for e in snapshot.events} == {0}
        tokens = [t for _, block in stored_blocks(snapshot) for t in block]
        assert sorted(tokens) == sorted(t for p in prompts for t in p)
    await generate(stub, ids(9000, 16), "live")
    for call in calls:
        assert (await next_batch(call)).sequence_number == 5
        call.cancel()


async def test_a_cursor_from_a_previous_life_gets_a_snapshot(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST)
    call = subscribe(stub, start=50)
    batch = await next_batch(call)
    assert batch.sequence_number == 1 and batch.snapshot.count == 1 and batch.events[0].HasField("cleared")
    call.cancel()


async def test_load_records_before_the_first_batch(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST)
    call = subscribe(stub, load_first=True)
    first = await asyncio.wait_for(call.read(), 5)
    assert first.sequence_number == 0 and first.load.load_only and not first.events
    assert first.load.max_total_num_tokens == 524288 and first.load.max_running_requests == 256
    await generate(stub, ids(1000, 16), "a")
    assert (await next_batch(call)).sequence_number == 1
    call.cancel()


async def test_flush_cache_publishes_cleared(start_worker: StartWorker) -> None:
    _, stub = await start_worker(**FAST)
    call = subscribe(stub)
    await generate(stub, ids(1000, 16), "a")
    await next_batch(call)
    assert (await stub.FlushCache(common.FlushCacheRequest())).success
    batch = await next_batch(call)
    assert batch.sequence_number == 2 and batch.events[0].HasField("cleared")
    call.cancel()


@pytest.mark.parametrize("mode", MODES)
async def test_no_kv_events_is_unimplemented(start_worker: StartWorker, mode: dict[str, Any]) -> None:
    _, stub = await start_worker(**mode, kv_events=False)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await subscribe(stub).read()
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_load_only_records_follow_the_running_set(start_worker: StartWorker, tokenizer: Any) -> None:
    _, stub = await start_worker()
    call = subscribe(stub)
    await generate(stub, ids(1000, 16), "a")
    assert (await next_batch(call)).sequence_number == 1
    stalled = stub.Generate(make_request(prompt(tokenizer, "[ref stall=1]"), rid="busy"))
    await stalled.read()
    while True:
        record = await asyncio.wait_for(call.read(), 5)
        if record.load.running_requests == 1:
            break
    assert record.load.load_only and record.sequence_number == 1 and not record.events
    assert record.load.HasField("cache_hit_rate")  # load-only records carry the telemetry
    stalled.cancel()
    call.cancel()
