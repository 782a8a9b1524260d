"""Generation simulation: a request's whole output and emission schedule, computed up front.

Outputs are deterministic, so the serving loops only walk a precomputed list of steps; this keeps
per-message Python work to slicing and message construction.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length"]
# (due seconds after the request started, index, start, end, last): emit output[start:end] of choice
# `index`; `last` means the choice is complete after this step.
Step = tuple[float, int, int, int, bool]


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    ids: list[int]
    finish_reason: FinishReason
    matched_token_id: int | None


@dataclass(frozen=True, slots=True)
class Timing:
    ttft_s: float
    itl_s: float
    chunk: int
    random_chunk: bool
    seed: int


def generate_ids(
    script_ids: list[int],
    *,
    eos_ids: Collection[int],
    stop_token_ids: Collection[int],
    ignore_eos: bool,
    min_new_tokens: int,
    max_new_tokens: int,
    filler: Callable[[int], list[int]],
) -> tuple[list[int], FinishReason, int | None]:
    """What the engine would sample: the script, then EOS, cut by token stops or the length limit.

    As in SGLang's ``check_finished``, ``ignore_eos`` disables every token stop (EOS and stop_token_ids),
    and no stop counts before ``min_new_tokens`` tokens exist.
    """
    if ignore_eos:
        ids = script_ids[:max_new_tokens]
        if len(ids) < max_new_tokens:
            ids = ids + filler(max_new_tokens - len(ids))
        return ids, "length", None
    eos = next(iter(eos_ids))
    if len(script_ids) < min_new_tokens:
        body = [*script_ids, *filler(min_new_tokens - len(script_ids)), eos]
    else:
        body = [*script_ids, eos]
    stops = set(eos_ids)
    stops.update(stop_token_ids)
    limit = min(len(body), max_new_tokens)
    for pos in range(max(min_new_tokens - 1, 0), limit):
        if body[pos] in stops:
            return body[: pos + 1], "stop", body[pos]
    return body[:limit], "length", None


def schedule(choices: list[Choice], timing: Timing, stream: bool) -> list[Step]:
    """Steps of all choices, interleaved round-robin when due at the same time."""
    keyed: list[tuple[float, int, int, int, int, bool]] = []
    for choice in choices:
        total = len(choice.ids)
        index = choice.index
        if not stream or total == 0:
            due = timing.ttft_s + timing.itl_s * max(total - 1, 0)
            keyed.append((due, 0, index, 0, total, True))
            continue
        sizes = _chunk_sizes(total, timing, index)
        due = timing.ttft_s
        start = 0
        for round_, size in enumerate(sizes):
            if round_:
                due += timing.itl_s * size
            end = start + size
            keyed.append((due, round_, index, start, end, end == total))
            start = end
    if len(choices) > 1:
        keyed.sort()
    return [(due, index, start, end, last) for due, _, index, start, end, last in keyed]


def _chunk_sizes(total: int, timing: Timing, index: int) -> list[int]:
    chunk = timing.chunk
    if not timing.random_chunk or chunk == 1:
        sizes = [chunk] * (total // chunk)
        if total % chunk:
            sizes.append(total % chunk)
        return sizes
    rng = random.Random(timing.seed * 1_000_003 + index)
    sizes = []
    left = total
    while left > 0:
        size = min(rng.randint(1, chunk), left)
        sizes.append(size)
        left -= size
    return sizes
