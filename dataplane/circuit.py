"""The per-worker circuit breaker (SMG's ``worker/circuit_breaker.rs``).

::

    closed ──failure_threshold consecutive failures──► open
    open ──timeout elapsed (noticed when next asked)──► half_open
    half_open ──success_threshold consecutive successes──► closed
    half_open ──any failure──► open

A failure is a request outcome whose (HTTP-equivalent) status is in ``FAILURE_STATUSES``; every other
outcome is a success. Open workers are not routable. Outcomes are recorded once per request attempt,
never per streamed message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

BreakerState = Literal["closed", "open", "half_open"]
FAILURE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 10
    success_threshold: int = 3
    timeout_secs: float = 60.0
    enabled: bool = True


class BreakerObserver(Protocol):
    """Told every outcome a breaker counts and every state change (metrics)."""

    def outcome(self, success: bool) -> None: ...

    def transition(self, old: BreakerState, new: BreakerState) -> None: ...


class CircuitBreaker:
    """One worker's breaker. ``clock`` is ``time.monotonic`` unless a test steers time."""

    __slots__ = ("_clock", "_failures", "_observer", "_opened_at", "_state", "_successes", "config")

    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        observer: BreakerObserver | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._observer = observer
        self._state: BreakerState = "closed"
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() - self._opened_at >= self.config.timeout_secs:
            self._move("half_open")
            self._successes = 0
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def consecutive_successes(self) -> int:
        return self._successes

    def _move(self, state: BreakerState) -> None:
        if self._observer is not None:
            self._observer.transition(self._state, state)
        self._state = state

    def allows(self) -> bool:
        return self.state != "open"

    @property
    def reopens_at(self) -> float | None:
        """When an open breaker lets requests through again (on the breaker's clock); else ``None``."""
        return self._opened_at + self.config.timeout_secs if self._state == "open" else None

    def record(self, status: int) -> bool:
        """Count one request outcome; True when it opened the breaker (the worker stops being routable)."""
        if self._observer is not None:
            self._observer.outcome(status not in FAILURE_STATUSES)
        if not self.config.enabled:
            return False
        state = self.state
        if status not in FAILURE_STATUSES:
            self._failures = 0
            self._successes += 1  # counted in every state, for the gauge; half_open starts from 0
            if state == "half_open" and self._successes >= self.config.success_threshold:
                self._move("closed")
            return False
        self._failures += 1
        self._successes = 0
        if state == "half_open" or (state == "closed" and self._failures >= self.config.failure_threshold):
            self._move("open")
            self._opened_at = self._clock()
            return True
        return False
