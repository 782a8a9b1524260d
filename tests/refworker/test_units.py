"""Pure parts of the engine: directive parsing, token generation rules, schedules, prefix cache."""

from __future__ import annotations

import pytest

from refworker.directives import NO_DIRECTIVES, DirectiveError, Directives, parse_directives
from refworker.plan import Choice, Timing, generate_ids, schedule
from refworker.prefix_cache import PrefixCache


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
    cache = PrefixCache(max_blocks=4, block_size=4)
    assert cache.lookup_and_insert(list(range(10))) == 0
    assert cache.lookup_and_insert(list(range(10))) == 8
    assert cache.lookup_and_insert([*range(4), 50, 51, 52, 53]) == 4  # diverges in block two
    assert cache.lookup_and_insert([9, *range(9)]) == 0
    assert len(cache) == 4
