"""Workers for routing tests: real ``Worker`` objects over the in-memory ``FakeClient``."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from dataplane.config import WorkerUrl
from dataplane.routing import Policy, RouteRequest
from dataplane.types import EngineLoad, WorkerInfo
from dataplane.workers import Worker
from tests.fakes.worker import FakeClient

MODEL = "test/model"
INFO = WorkerInfo(MODEL, "/m", "/m", 32768, (0,), "default")


def worker(i: int, *, load: int = 0, engine: EngineLoad | None = None) -> Worker:
    url = f"grpc://127.0.0.1:{5000 + i}"
    client = FakeClient(url, lambda request: [], INFO)
    return Worker(
        url=WorkerUrl.parse(url), client=client, model_id=MODEL, status="ready", load=load, engine_load=engine
    )


def fleet(n: int) -> list[Worker]:
    return [worker(i) for i in range(n)]


def engine(
    usage: float = 0.0,
    *,
    queued: int | None = None,
    waiting: int = 0,
    throughput: float = 0.0,
    at: float = 0.0,
) -> EngineLoad:
    return EngineLoad(
        running_requests=0,
        waiting_requests=waiting,
        token_usage=usage,
        gen_throughput=throughput,
        waiting_uncached_tokens=queued,
        received_at=at,
    )


def route(policy: Policy, workers: Sequence[Worker], request: RouteRequest) -> Worker:
    chosen = policy.select(request, workers)
    assert chosen is not None
    return chosen


class Leases:
    """Hold each routed request's load for ``hold`` routing steps, as the registry's lease would."""

    def __init__(self, hold: int) -> None:
        self._held: deque[list[Worker]] = deque([] for _ in range(hold))

    def step(self, chosen: Worker) -> None:
        for w in self._held.popleft():
            w.load -= 1
        chosen.load += 1
        self._held.append([chosen])
