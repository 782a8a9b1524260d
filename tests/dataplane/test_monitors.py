"""Engine loads and KV events flowing from workers into routing: polling, the KV stream follower, upkeep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from smg_grpc_proto.generated import common_pb2 as common_pb

from dataplane.client import kv_event_batch
from dataplane.config import WorkerUrl
from dataplane.errors import WorkerError
from dataplane.monitors import KvFeed, maintain, poll_loads, summed
from dataplane.types import EngineLoad, KvBlock, KvCleared, KvEventBatch, KvRemoved, KvStored, WorkerInfo
from dataplane.workers import Worker, WorkerRegistry
from tests.dataplane.gateways import until
from tests.fakes.worker import FakeClient, KvStream

INFO = WorkerInfo("m", "", "", 0, (), "default")
URL = "grpc://127.0.0.1:7300"


class Sink:
    """Records what a ``KvEventSink`` is told."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, int]] = []
        self.changed = asyncio.Event()

    def apply(self, worker_id: str, batch: KvEventBatch) -> None:
        self.log.append(("apply", worker_id, batch.sequence_number))
        self.changed.set()

    def forget(self, worker_id: str) -> None:
        self.log.append(("forget", worker_id, 0))
        self.changed.set()

    def applied(self) -> list[int]:
        return [seq for op, _, seq in self.log if op == "apply"]


def load(running: int, usage: float = 0.5) -> EngineLoad:
    return EngineLoad(running, 1, usage, 10.0, 100, received_at=1.0)


def batch(seq: int, *, load_only: bool = False, rank: int | None = None, running: int = 0) -> KvEventBatch:
    events = () if load_only else (KvStored((KvBlock(seq, (seq,)),), None),)
    return KvEventBatch(seq, events, rank, load(running) if running or load_only else None, load_only)


def gap_error() -> WorkerError:
    return WorkerError("stream dropped", status=502)


def make(*streams: KvStream) -> tuple[Worker, FakeClient, Sink, KvFeed]:
    """A feed over a worker that plays ``streams``, one per connection; the last one stays open."""
    played = [*streams[:-1], [*streams[-1], asyncio.Event()]] if streams else []
    client = FakeClient(URL, lambda _: [], INFO, kv_streams=played)
    worker = Worker(url=WorkerUrl.parse(URL), client=client, model_id="m", status="ready")
    sink = Sink()
    return worker, client, sink, KvFeed(worker, sink, initial_backoff=0.001, max_backoff=0.004)


async def run_until(feed: KvFeed, done: Callable[[], bool]) -> None:
    task = asyncio.create_task(feed.run())
    try:
        await until(done)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_batches_apply_in_order_and_duplicates_are_dropped() -> None:
    _, client, sink, feed = make([batch(1), batch(2), batch(2), batch(1), batch(3)])
    await run_until(feed, lambda: feed.last == 3)
    assert sink.applied() == [1, 2, 3]
    assert sink.log[0][1] == URL  # the sink knows the worker by its url, as the policies do
    assert client.kv_starts == [0]


async def test_load_only_heartbeats_give_their_load_and_apply_nothing() -> None:
    worker, _, sink, feed = make([batch(1), batch(1, load_only=True, running=7), batch(2)])
    await run_until(feed, lambda: feed.last == 2)
    assert sink.applied() == [1, 2]
    assert worker.engine_load is not None and worker.engine_load.running_requests == 7


async def test_dp_ranks_loads_are_summed() -> None:
    worker, _, _, feed = make([batch(1, rank=0, running=2), batch(2, rank=1, running=3)])
    await run_until(feed, lambda: feed.last == 2)
    assert worker.engine_load is not None
    assert worker.engine_load.running_requests == 5 and worker.engine_load.waiting_uncached_tokens == 200


async def test_a_gap_reconnects_at_once_from_the_last_sequence_to_replay() -> None:
    _, client, sink, feed = make([batch(1), batch(2), batch(5)], [batch(2), batch(3), batch(4), batch(5)])
    await run_until(feed, lambda: feed.last == 5)
    assert client.kv_starts == [0, 2]
    assert sink.applied() == [1, 2, 3, 4, 5]
    assert ("forget", URL, 0) not in sink.log


async def test_a_gap_the_replay_cannot_close_starts_the_workers_state_over() -> None:
    _, client, sink, feed = make([batch(1), batch(4)], [batch(4), batch(5)])
    await run_until(feed, lambda: feed.last == 5)
    assert client.kv_starts == [0, 1]
    assert sink.log == [("apply", URL, 1), ("forget", URL, 0), ("apply", URL, 4), ("apply", URL, 5)]


async def test_errors_and_ends_reconnect_with_backoff_and_resume() -> None:
    _, client, sink, feed = make([batch(1), gap_error()], [batch(1), batch(2)], [batch(3)])
    await run_until(feed, lambda: feed.last == 3)
    assert client.kv_starts == [0, 1, 2]
    assert sink.applied() == [1, 2, 3]


async def test_a_restarted_worker_is_forgotten_and_followed_anew() -> None:
    _, client, sink, feed = make([batch(1), batch(2), batch(3)], [batch(1), batch(2)])
    await run_until(feed, lambda: len(client.kv_starts) == 2 and feed.last == 2)
    assert client.kv_starts == [0, 3]
    assert sink.log[-3:] == [("forget", URL, 0), ("apply", URL, 1), ("apply", URL, 2)]


async def test_snapshot_chunks_are_applied_whatever_their_number() -> None:
    snapshot = KvEventBatch(2, (KvCleared(),), snapshot=True)
    *_, sink, feed = make([batch(1), batch(2), batch(3), snapshot, batch(3)])
    await run_until(feed, lambda: sink.applied()[-1:] == [3] and len(sink.applied()) == 5)
    assert sink.applied() == [1, 2, 3, 2, 3]


async def test_unimplemented_ends_the_feed() -> None:
    _, client, sink, feed = make()
    await asyncio.wait_for(feed.run(), 5)
    assert sink.log == [] and client.kv_starts == []


async def test_a_failing_sink_is_started_over_and_the_stream_goes_on() -> None:
    *_, sink, feed = make([batch(1), batch(2)])

    def broken(worker_id: str, batch: KvEventBatch) -> None:
        sink.log.append(("apply", worker_id, batch.sequence_number))
        if batch.sequence_number == 1:
            raise RuntimeError("bug")

    sink.apply = broken  # type: ignore[method-assign]
    await run_until(feed, lambda: feed.last == 2)
    assert sink.log == [("apply", URL, 1), ("forget", URL, 0), ("apply", URL, 2)]


def test_summed_loads() -> None:
    a = EngineLoad(1, 2, 0.2, 5.0, None, received_at=3.0)
    b = EngineLoad(3, 4, 0.6, 7.0, 10, received_at=4.0)
    assert summed([a, b]) == EngineLoad(4, 6, pytest.approx(0.4), 12.0, None, received_at=4.0)
    assert summed([a]) is a


# --- polling ---------------------------------------------------------------------------------------------


async def test_poll_loads_sets_engine_load_and_skips_workers_without() -> None:
    registry = WorkerRegistry()
    reporting = FakeClient("a", lambda _: [], INFO, loads=load(4))
    silent = FakeClient("b", lambda _: [], INFO)
    failing = FakeClient("c", lambda _: [], INFO, loads=WorkerError("down", status=503))
    workers = [
        Worker(url=WorkerUrl.parse(f"grpc://127.0.0.1:{7400 + i}"), client=c, model_id="m", status="ready")
        for i, c in enumerate((reporting, silent, failing))
    ]
    for w in workers:
        registry.add(w)
    task = asyncio.create_task(poll_loads(registry, 0.005, 1.0))
    try:
        await until(lambda: reporting.loads_polled >= 4)
    finally:
        task.cancel()
    assert workers[0].engine_load == load(4)
    assert silent.loads_polled == 1  # told us once that it reports nothing
    assert failing.loads_polled >= 3 and workers[2].engine_load is None  # errors are retried next round


async def test_maintain_runs_the_policys_upkeep_periodically() -> None:
    seen: list[float] = []

    class Upkeep:
        name = "upkeep"

        def maintain(self, now: float) -> None:
            seen.append(now)
            if len(seen) == 2:
                raise RuntimeError("a bug does not stop the next round")

    task = asyncio.create_task(maintain(Upkeep(), 0.001, iter(range(100)).__next__))  # type: ignore[arg-type]
    try:
        await until(lambda: len(seen) >= 3)
    finally:
        task.cancel()
    assert seen[:3] == [0, 1, 2]


# --- the wire ----------------------------------------------------------------------------------------------


def _stored(hashes: list[int], **fields: object) -> common_pb.KvCacheEvent:
    blocks = [common_pb.KvBlock(block_hash=h, token_ids=[h, h + 1]) for h in hashes]
    return common_pb.KvCacheEvent(stored=common_pb.KvBlocksStored(blocks=blocks, **fields))


def test_kv_event_batch_keeps_device_tier_local_blocks() -> None:
    lora_block = common_pb.KvBlock(block_hash=9, token_ids=[9], lora_id=1)
    wire = common_pb.KvEventBatch(
        sequence_number=7,
        dp_rank=1,
        events=[
            _stored([1, 2], parent_block_hash=0),
            _stored([3], tier=common_pb.KV_CACHE_TIER_HOST),
            _stored([4], locality=common_pb.KV_CACHE_LOCALITY_REMOTE),
            _stored([5], cache_salt="s"),
            _stored([6], tier=common_pb.KV_CACHE_TIER_DEVICE, locality=common_pb.KV_CACHE_LOCALITY_LOCAL),
            common_pb.KvCacheEvent(
                stored=common_pb.KvBlocksStored(
                    blocks=[common_pb.KvBlock(block_hash=8, token_ids=[8]), lora_block]
                )
            ),
            common_pb.KvCacheEvent(removed=common_pb.KvBlocksRemoved(block_hashes=[1])),
            common_pb.KvCacheEvent(removed=common_pb.KvBlocksRemoved(block_hashes=[3], cache_level=1)),
            common_pb.KvCacheEvent(cleared=common_pb.KvCacheCleared()),
        ],
        load=common_pb.EngineLoad(running_requests=2, waiting_requests=1, token_usage=0.25, load_only=False),
    )
    batch = kv_event_batch(wire)
    assert batch.sequence_number == 7 and batch.dp_rank == 1 and not batch.snapshot
    assert batch.events == (
        KvStored((KvBlock(1, (1, 2)), KvBlock(2, (2, 3))), 0),
        KvStored((KvBlock(6, (6, 7)),), None),
        KvStored((KvBlock(8, (8,)),), None),  # the chain ends where the LoRA namespace begins
        KvRemoved((1,)),
        KvCleared(),
    )
    assert batch.load is not None and (batch.load.running_requests, batch.load.token_usage) == (2, 0.25)
    assert batch.load.waiting_uncached_tokens is None and not batch.load_only


def test_kv_event_batch_heartbeat_and_snapshot() -> None:
    heartbeat = kv_event_batch(
        common_pb.KvEventBatch(
            sequence_number=3, load=common_pb.EngineLoad(load_only=True, waiting_uncached_tokens=0)
        )
    )
    assert heartbeat.load_only and heartbeat.load is not None and heartbeat.load.waiting_uncached_tokens == 0
    assert heartbeat.dp_rank is None
    chunk = kv_event_batch(
        common_pb.KvEventBatch(sequence_number=4, snapshot=common_pb.KvSnapshotChunk(count=1))
    )
    assert chunk.snapshot and chunk.load is None and not chunk.load_only
