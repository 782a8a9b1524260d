"""Which outcomes are retried, and the backoff's bounds."""

from __future__ import annotations

import random

import pytest

from dataplane.retry import RETRYABLE_STATUSES, RetryPolicy


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUSES))
def test_retryable_statuses_until_the_attempts_run_out(status: int) -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.should_retry(status, attempt) for attempt in range(4)] == [True, True, False, False]


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409, 413, 501])
def test_other_statuses_are_never_retried(status: int) -> None:
    assert not RetryPolicy().should_retry(status, 0)


def test_one_attempt_means_no_retry() -> None:
    assert not RetryPolicy(max_attempts=1).should_retry(503, 0)


def test_backoff_grows_then_caps_without_jitter() -> None:
    policy = RetryPolicy(initial_backoff_ms=50, max_backoff_ms=200, multiplier=2.0, jitter_factor=0.0)
    assert [policy.backoff(i) for i in range(5)] == [0.05, 0.1, 0.2, 0.2, 0.2]


def test_backoff_survives_huge_attempt_numbers() -> None:
    policy = RetryPolicy(max_backoff_ms=30000, multiplier=10.0, jitter_factor=0.0)
    assert policy.backoff(10_000) == 30.0


@pytest.mark.parametrize("attempt", range(12))
def test_jitter_stays_within_its_factor_and_spreads_both_ways(attempt: int) -> None:
    policy = RetryPolicy(rng=random.Random(attempt))  # SMG's defaults: 50 ms × 1.5^i, max 30 s, ±20 %
    base = min(50 * 1.5**attempt, 30000) / 1000
    delays = [policy.backoff(attempt) for _ in range(500)]
    assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
    assert min(delays) < base * 0.9 and max(delays) > base * 1.1
