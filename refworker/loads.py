"""The engine's load figures (what ``GetLoads`` and the KV event stream's load records report)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

THROUGHPUT_WINDOW_S = 5.0


@dataclass(frozen=True, slots=True)
class LoadFigures:
    running_requests: int
    waiting_requests: int
    waiting_uncached_tokens: int
    used_tokens: int
    max_total_tokens: int
    gen_throughput: float
    cache_hit_rate: float
    max_running_requests: int
    prefill_pending_tokens: int

    @property
    def token_usage(self) -> float:
        return self.used_tokens / self.max_total_tokens if self.max_total_tokens else 0.0


class Counters:
    """Generated tokens per second over a sliding window (1 s buckets), and the prompt cache hit rate."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._buckets: deque[list[int]] = deque()  # [second, tokens]
        self.prompt_tokens = 0
        self.cached_tokens = 0

    def generated(self, tokens: int) -> None:
        second = int(time.monotonic())
        buckets = self._buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += tokens
        else:
            buckets.append([second, tokens])
            while buckets[0][0] <= second - THROUGHPUT_WINDOW_S:
                buckets.popleft()

    def prompt(self, tokens: int, cached: int) -> None:
        self.prompt_tokens += tokens
        self.cached_tokens += cached

    def throughput(self) -> float:
        now = time.monotonic()
        since = now - THROUGHPUT_WINDOW_S
        tokens = sum(count for second, count in self._buckets if second + 1 > since)
        return tokens / max(min(THROUGHPUT_WINDOW_S, now - self.started), 1e-3)

    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
