"""Load figures and KV event batches as ``smg_grpc_proto`` messages (GetLoads, SubscribeKvEvents)."""

from __future__ import annotations

import datetime
from typing import Any, assert_never

from smg_grpc_proto.generated import common_pb2 as common
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb

from refworker.kv_cache import block_tokens
from refworker.kv_events import Batch, Cleared, Event, Removed, Stored
from refworker.loads import LoadFigures

VERSION = "refworker-0.1"


def loads_response(load: LoadFigures, dp_rank: int | None) -> Any:
    """SGLang's ``GetLoadsResponse``: the aggregate, and rank 0's load unless ``dp_rank`` names another."""
    total = load.running_requests + load.waiting_requests
    response = pb.GetLoadsResponse(
        timestamp=timestamp(),
        version=VERSION,
        dp_rank_count=1,
        aggregate=pb.AggregateMetrics(
            total_running_reqs=load.running_requests,
            total_waiting_reqs=load.waiting_requests,
            total_reqs=total,
            avg_token_usage=load.token_usage,
            avg_throughput=load.gen_throughput,
            avg_utilization=load.running_requests / load.max_running_requests,
        ),
    )
    if reports_rank(dp_rank):
        response.loads.append(
            pb.SchedulerLoad(
                **scheduler_load_fields(load),
                memory=pb.MemoryMetrics(token_capacity=load.max_total_tokens),
                queues=pb.QueueMetrics(waiting=load.waiting_requests),
            )
        )
    return response


def scheduler_load_fields(load: LoadFigures) -> dict[str, Any]:
    """``SchedulerLoad`` fields 1–12 of rank 0, whose names and meaning SGLang and vLLM share."""
    return {
        "dp_rank": 0,
        "num_running_reqs": load.running_requests,
        "num_waiting_reqs": load.waiting_requests,
        "num_total_reqs": load.running_requests + load.waiting_requests,
        "num_used_tokens": load.used_tokens,
        "max_total_num_tokens": load.max_total_tokens,
        "token_usage": load.token_usage,
        "gen_throughput": load.gen_throughput,
        "cache_hit_rate": load.cache_hit_rate,
        "utilization": load.running_requests / load.max_running_requests,
        "max_running_requests": load.max_running_requests,
        "num_waiting_uncached_tokens": load.waiting_uncached_tokens,
    }


def reports_rank(dp_rank: int | None) -> bool:
    """The worker is one DP rank (0): a ``GetLoads`` filtered to another rank gets no load entry."""
    return dp_rank is None or dp_rank == 0


def timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def engine_load(load: LoadFigures, sample: int, load_only: bool, telemetry: bool) -> Any:
    """The record on a KV event batch; the telemetry beyond routing only when ``telemetry``."""
    usage = load.token_usage
    record = common.EngineLoad(
        running_requests=load.running_requests,
        waiting_requests=load.waiting_requests,
        waiting_uncached_tokens=load.waiting_uncached_tokens,
        token_usage=usage,
        active_token_usage=usage,  # cached blocks nobody uses are not counted in either
        gen_throughput=load.gen_throughput,
        max_running_requests=load.max_running_requests,
        sample=sample,
        load_only=load_only,
        prefill_pending_tokens=load.prefill_pending_tokens,
    )
    if telemetry:
        record.cache_hit_rate = load.cache_hit_rate
        record.num_used_tokens = load.used_tokens
        record.max_total_num_tokens = load.max_total_tokens
        record.queues.waiting = load.waiting_requests
        record.memory.token_capacity = load.max_total_tokens
    return record


def batch_message(batch: Batch | None, sequence: int, timestamp: float, load: Any) -> Any:
    """A ``KvEventBatch``; ``batch=None`` makes a load-only one numbered ``sequence``."""
    if batch is None:
        return common.KvEventBatch(sequence_number=sequence, timestamp=timestamp, load=load)
    message = common.KvEventBatch(
        sequence_number=batch.sequence,
        timestamp=batch.timestamp,
        events=[_event(event) for event in batch.events],
        load=load,
    )
    if batch.snapshot is not None:
        chunk = batch.snapshot
        message.snapshot.CopyFrom(
            common.KvSnapshotChunk(
                index=chunk.index, count=chunk.count, blocks=chunk.blocks, unknown_before=0
            )
        )
    return message


def _event(event: Event) -> Any:
    match event:
        case Stored(event_id, parent, blocks):
            stored = common.KvBlocksStored(
                blocks=[_block(block_hash, block_tokens(tokens)) for block_hash, tokens in blocks],
                tier=common.KV_CACHE_TIER_DEVICE,
                locality=common.KV_CACHE_LOCALITY_LOCAL,
            )
            if parent is not None:
                stored.parent_block_hash = parent
            return common.KvCacheEvent(event_id=event_id, stored=stored)
        case Removed(event_id, hashes):
            removed = common.KvBlocksRemoved(
                block_hashes=hashes, tier=common.KV_CACHE_TIER_DEVICE, locality=common.KV_CACHE_LOCALITY_LOCAL
            )
            return common.KvCacheEvent(event_id=event_id, removed=removed)
        case Cleared(event_id):
            return common.KvCacheEvent(event_id=event_id, cleared=common.KvCacheCleared())
        case _:
            assert_never(event)


def _block(block_hash: int, token_ids: list[int]) -> Any:
    return common.KvBlock(block_hash=block_hash, token_ids=token_ids, block_size=len(token_ids))
