"""Retries (SMG's ``routers/common/retry.rs``): which outcomes are retried, how often, after how long.

A request is re-run as a whole, on a newly selected worker, only while nothing of it has reached the
client; ``max_attempts`` counts every attempt, the first included.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff_ms: float = 50.0
    max_backoff_ms: float = 30000.0
    multiplier: float = 1.5
    jitter_factor: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def should_retry(self, status: int, attempt: int) -> bool:
        """Whether attempt ``attempt`` (0-based) that ended with ``status`` gets another one."""
        return status in RETRYABLE_STATUSES and attempt + 1 < self.max_attempts

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` (0-based) failed:
        ``min(initial × multiplier^attempt, max)``, then ± up to ``jitter_factor`` of that."""
        try:
            base = min(self.initial_backoff_ms * self.multiplier**attempt, self.max_backoff_ms)
        except OverflowError:
            base = self.max_backoff_ms
        jitter = base * self.jitter_factor * self.rng.uniform(-1.0, 1.0)
        return max(base + jitter, 0.0) / 1000.0
