"""Pure parts of the engine: directive parsing, token generation rules, schedules, prefix cache."""

from __future__ import annotations

import random
from typing import Any

import pytest

from refworker import kv_events
from refworker.cli import build_parser, config_from_args
from refworker.config import ConfigError, WorkerConfig
from refworker.directives import NO_DIRECTIVES, DirectiveError, Directives, parse_directives
from refworker.kv_cache import KvCache
from refworker.kv_events import Cleared, KvEventLog, Removed, Stored, Subscription
from refworker.plan import Choice, Timing, generate_ids, schedule


def filler(count: int) -> list[int]:
    return [7] * count


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no directive here", NO_DIRECTIVES),
        ("[reference] is not one", NO_DIRECTIVES),
        ("[ref]", Directives()),
        ("[ref script=tool tool=search]", Directives(script="tool", tool="search")),
        ("[ref chunk=random seed=-3]", Directives(random_chunk=True, seed=-3)),
        ("[ref chunk=4 ttft_ms=1.5 itl_ms=0]", Directives(chunk=4, ttft_ms=1.5, itl_ms=0.0)),
        ("[ref fail=unavailable]", Directives(fail="UNAVAILABLE")),
        ("[ref stall=1 fail_after=2]", Directives(stall=True, fail_after=2)),
        ("[ref script=echo] later [ref tokens=5]", Directives(tokens=5)),
    ],
)
def test_parse_directives(text: str, expected: Directives) -> None:
    assert parse_directives(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[ref nope=1]",
        "[ref script=poem]",
        "[ref tokens=-1]",
        "[ref chunk=0]",
        "[ref stall=yes]",
        "[ref tokens]",
        "[ref fail=OK]",
        "[ref ttft_ms=soon]",
        "[ref tool=a;b]",
    ],
)
def test_bad_directives(text: str) -> None:
    with pytest.raises(DirectiveError):
        parse_directives(text)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ([1, 2, 3, 99], "stop", 99)),
        ({"max_new_tokens": 2}, ([1, 2], "length", None)),
        ({"max_new_tokens": 4}, ([1, 2, 3, 99], "stop", 99)),
        ({"stop_token_ids": [2]}, ([1, 2], "stop", 2)),
        ({"stop_token_ids": [1], "min_new_tokens": 2}, ([1, 2, 3, 99], "stop", 99)),
        ({"min_new_tokens": 5}, ([1, 2, 3, 7, 7, 99], "stop", 99)),
        ({"ignore_eos": True, "max_new_tokens": 5, "stop_token_ids": [2]}, ([1, 2, 3, 7, 7], "length", None)),
    ],
)
def test_generate_ids(kwargs: dict[str, object], expected: tuple[list[int], str, int | None]) -> None:
    options: dict[str, object] = {
        "eos_ids": (99, 98),
        "stop_token_ids": (),
        "ignore_eos": False,
        "min_new_tokens": 0,
        "max_new_tokens": 100,
    }
    options.update(kwargs)
    assert generate_ids([1, 2, 3], filler=filler, **options) == expected  # type: ignore[arg-type]


def test_schedule_interleaves_and_times_chunks() -> None:
    choices = [Choice(i, [1, 2, 3, 4, 5], "stop", 5) for i in range(2)]
    steps = schedule(choices, Timing(ttft_s=1.0, itl_s=0.5, chunk=2, random_chunk=False, seed=0), stream=True)
    assert steps == [
        (1.0, 0, 0, 2, False),
        (1.0, 1, 0, 2, False),
        (2.0, 0, 2, 4, False),
        (2.0, 1, 2, 4, False),
        (2.5, 0, 4, 5, True),
        (2.5, 1, 4, 5, True),
    ]
    assert schedule(choices[:1], Timing(1.0, 0.5, 2, False, 0), stream=False) == [(3.0, 0, 0, 5, True)]


def test_prefix_cache_counts_leading_full_blocks_and_evicts() -> None:
    cache = KvCache(capacity_tokens=16, block_size=4, sink=KvEventLog(history=8))
    assert cache.lookup_and_insert(list(range(10))) == 0
    assert cache.lookup_and_insert(list(range(10))) == 8
    assert cache.lookup_and_insert([*range(4), 50, 51, 52, 53]) == 4  # diverges in block two
    assert cache.lookup_and_insert([9, *range(9)]) == 0
    assert len(cache) == 4


def mirror(log: KvEventLog, subscription: Subscription, state: dict[int, int | None]) -> None:
    """Apply a subscription's queued batches to ``state`` (hash -> parent), as a gateway's index would."""
    while subscription.queue:
        for event in subscription.queue.popleft().events:
            if isinstance(event, Stored):
                parent = event.parent
                for block_hash, _ in event.blocks:
                    state[block_hash] = parent
                    parent = block_hash
            elif isinstance(event, Removed):
                for block_hash in event.hashes:
                    del state[block_hash]
            else:
                state.clear()


async def test_cache_invariants_and_events_under_random_use() -> None:
    rng = random.Random(7)
    log = KvEventLog(history=100_000)
    cache = KvCache(capacity_tokens=48 * 4, block_size=4, sink=log)
    subscription = log.subscribe(0, cache.live_blocks)
    state: dict[int, int | None] = {}
    held: list[list[int]] = []
    bases = [[rng.randrange(50) for _ in range(12)] for _ in range(4)]
    for _ in range(3000):
        if rng.random() < 0.5 or not held:
            prompt = rng.choice(bases) + [rng.randrange(5) for _ in range(rng.randrange(13))]
            hashes = cache.hashes(prompt)
            found = cache.match(hashes)
            cache.acquire(hashes[:found])
            free = cache.capacity_blocks - len(cache)
            if (
                len(hashes) - found > free
                and cache.evict(len(hashes) - found - free) < len(hashes) - found - free
            ):
                cache.release(hashes[:found])
            else:
                cache.store(prompt, hashes, found, pin=True)
                held.append(hashes)
        else:
            cache.release(held.pop(rng.randrange(len(held))))
        log.flush()
        live = {h: p for h, p, _ in cache.live_blocks()}
        order = {h: i for i, h in enumerate(live)}
        assert all(p is None or order[p] < order[h] for h, p in live.items())  # parents first, all live
        assert len(cache) <= cache.capacity_blocks
        assert cache.pinned_blocks == len({h for hashes in held for h in hashes})
        mirror(log, subscription, state)
        assert state == live


async def test_snapshot_chunks_are_numbered_up_to_the_current_sequence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kv_events, "SNAPSHOT_CHUNK_BLOCKS", 3)
    log = KvEventLog(history=1)
    cache = KvCache(capacity_tokens=1000, block_size=2, sink=log)
    for prompt in ([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 9, 9], [5, 5, 5, 5, 5, 5]):
        cache.lookup_and_insert(prompt)
        if prompt[-1] != 9:
            log.flush()
    subscription = log.subscribe(0, cache.live_blocks)  # the history lost batch 1
    chunks = list(subscription.queue)
    assert [c.sequence for c in chunks] == [1, 2]  # 3 chunks wanted, only sequences 1..2 are free
    assert [(c.snapshot.index, c.snapshot.count, c.snapshot.blocks) for c in chunks if c.snapshot] == [
        (0, 2, 8),
        (1, 2, 8),
    ]
    assert isinstance(chunks[0].events[0], Cleared) and not any(
        isinstance(e, Cleared) for e in chunks[1].events
    )
    state: dict[int, int | None] = {}
    mirror(log, subscription, state)
    assert state == {h: p for h, p, _ in cache.live_blocks()}


def test_cli_flags_of_realistic_mode() -> None:
    args = build_parser().parse_args(
        [
            "--realistic",
            "--prefill-tps",
            "4000",
            "--kv-tokens",
            "4096",
            "--block-size",
            "32",
            "--no-kv-events",
        ]
    )
    config = config_from_args(args)
    assert (config.realistic, config.prefill_tps, config.kv_tokens, config.block_size) == (
        True,
        4000.0,
        4096,
        32,
    )
    assert not config.kv_events and config.decode_base_ms == 6.0 and config.max_running == 256
    defaults = config_from_args(build_parser().parse_args([]))
    assert not defaults.realistic and defaults.kv_events and defaults.kv_tokens == 524288


@pytest.mark.parametrize(
    "overrides", [{"prefill_tps": 0.0}, {"block_size": 0}, {"kv_tokens": 8}, {"max_running": 0}]
)
def test_bad_realistic_configuration(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        WorkerConfig(**overrides)
