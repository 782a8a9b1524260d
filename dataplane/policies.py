"""Worker selection policies. A policy picks one of the healthy workers of a model."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from dataplane.config import PolicyName
from dataplane.workers import Worker


class Policy(Protocol):
    name: str

    def select(self, model_id: str, workers: Sequence[Worker]) -> Worker: ...


class RoundRobin:
    """Cycle through the healthy workers, one counter per model."""

    name = "round_robin"

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def select(self, model_id: str, workers: Sequence[Worker]) -> Worker:
        i = self._next.get(model_id, 0)
        self._next[model_id] = i + 1
        return workers[i % len(workers)]


class Random:
    name = "random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def select(self, model_id: str, workers: Sequence[Worker]) -> Worker:
        return workers[self._rng.randrange(len(workers))]


def make_policy(name: PolicyName) -> Policy:
    if name == "round_robin":
        return RoundRobin()
    return Random()
