"""KvIndex: per-worker blocks from KV events, under the gateway's own chained hashes."""

from __future__ import annotations

from dataplane.routing import KvIndex
from dataplane.routing.kv_index import chain_hashes
from dataplane.types import KvBlock, KvCleared, KvEvent, KvEventBatch, KvRemoved, KvStored

PROMPT = list(range(100, 164))  # four 16-token blocks


def blocks(first: int, count: int, size: int = 16, engine_base: int = 9000) -> tuple[KvBlock, ...]:
    """``count`` blocks of PROMPT starting at block ``first``, with arbitrary engine hashes."""
    span = range(first, first + count)
    return tuple(KvBlock(engine_base + i, tuple(PROMPT[i * size : (i + 1) * size])) for i in span)


def batch(*events: KvEvent, seq: int = 1, snapshot: bool = False, dp_rank: int | None = None) -> KvEventBatch:
    return KvEventBatch(seq, events, dp_rank=dp_rank, snapshot=snapshot)


def test_stored_blocks_score_their_leading_run() -> None:
    index = KvIndex()
    index.apply("w", batch(KvStored(blocks(0, 2), None)))
    assert index.score(PROMPT) == {"w": 2}
    index.apply("w", batch(KvStored(blocks(2, 1), parent_block_hash=9001)))
    assert index.score(PROMPT) == {"w": 3}
    assert index.score(PROMPT[:40]) == {"w": 2}  # only full blocks of the request count
    assert index.score([1, 2, 3] * 20) == {}
    assert index.blocks("w") == 3 and index.has_events("w")


def test_blocks_under_an_unknown_parent_cannot_be_reached() -> None:
    index = KvIndex()
    index.apply("w", batch(KvStored(blocks(1, 2), parent_block_hash=424242)))
    assert index.score(PROMPT) == {}
    assert index.blocks("w") == 0


def test_removal_by_engine_hash_cuts_the_run() -> None:
    index = KvIndex()
    index.apply("w", batch(KvStored(blocks(0, 4), None)))
    index.apply("w", batch(KvRemoved((9002,))))
    assert index.score(PROMPT) == {"w": 2}
    index.apply("w", batch(KvRemoved((9000, 777))))  # an unknown hash is ignored
    assert index.score(PROMPT) == {}
    assert index.blocks("w") == 2


def test_cleared_empties_the_worker_but_it_still_streams_events() -> None:
    index = KvIndex()
    index.apply("w", batch(KvStored(blocks(0, 4), None)))
    index.apply("w", batch(KvCleared()))
    assert index.score(PROMPT) == {} and index.blocks("w") == 0
    assert index.has_events("w")


def test_scores_are_per_worker_longest_leading_run() -> None:
    index = KvIndex()
    index.apply("a", batch(KvStored(blocks(0, 4), None)))
    index.apply("b", batch(KvStored(blocks(0, 1, engine_base=5000), None)))
    index.apply("c", batch(KvStored(blocks(1, 3), None)))  # parent 9000 unknown on c: unreachable
    assert index.score(PROMPT) == {"a": 4, "b": 1}


def test_a_snapshot_after_live_events_replaces_the_worker_state() -> None:
    index = KvIndex()
    index.apply("w", batch(KvStored(blocks(0, 4), None)))
    index.apply("w", batch(KvStored(blocks(0, 1, engine_base=100), None), snapshot=True))
    index.apply("w", batch(KvStored(blocks(1, 1, engine_base=100), parent_block_hash=100), snapshot=True))
    assert index.score(PROMPT) == {"w": 2}  # the chunks accumulate; what came before is gone
    index.apply("w", batch(KvRemoved((101,))))
    assert index.score(PROMPT) == {"w": 1}
    assert index.blocks("w") == 1


def test_load_only_batches_change_nothing() -> None:
    index = KvIndex()
    index.apply("w", KvEventBatch(0, (), load_only=True))
    assert not index.has_events("w")


def test_block_size_is_learned_from_the_events() -> None:
    index = KvIndex(block_size=16)
    index.apply("w", batch(KvStored(blocks(0, 3, size=4), None)))
    assert index.block_size("w") == 4
    assert index.block_size("unknown") == 16
    assert index.score(PROMPT) == {"w": 3}


def test_copies_on_several_dp_ranks_are_counted_separately() -> None:
    index = KvIndex()
    index.apply("w", batch(KvStored(blocks(0, 2), None), dp_rank=0))
    index.apply("w", batch(KvStored(blocks(0, 2), None), dp_rank=1))
    index.apply("w", batch(KvRemoved((9000, 9001)), dp_rank=0))
    assert index.score(PROMPT) == {"w": 2}
    index.apply("w", batch(KvCleared(), dp_rank=1))
    assert index.score(PROMPT) == {}


def test_a_duplicate_store_is_counted_once() -> None:
    index = KvIndex()
    index.apply("w", batch(KvStored(blocks(0, 2), None)))
    index.apply("w", batch(KvStored(blocks(0, 2), None), seq=2))
    index.apply("w", batch(KvRemoved((9000,)), seq=3))
    assert index.score(PROMPT) == {} and index.blocks("w") == 1


def test_forget_frees_everything_the_worker_held() -> None:
    index = KvIndex()
    index.apply("a", batch(KvStored(blocks(0, 4), None)))
    index.apply("b", batch(KvStored(blocks(0, 2), None)))
    index.forget("a")
    assert not index.has_events("a") and index.blocks("a") == 0
    assert index.score(PROMPT) == {"b": 2}
    index.forget("b")
    assert index.score(PROMPT) == {}
    assert index._holders == {}  # no block outlives its last holder


def test_chain_hashes_cover_the_whole_prefix() -> None:
    a = chain_hashes(PROMPT, 16)
    b = chain_hashes([0, *PROMPT[1:]], 16)
    assert len(a) == 4 and a[0] != b[0] and all(x != y for x, y in zip(a, b, strict=True))
