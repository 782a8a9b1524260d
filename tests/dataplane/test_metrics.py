"""The data plane's Prometheus metrics, scraped from a gateway over in-memory workers after real requests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from dataplane.circuit import BreakerConfig, BreakerState, CircuitBreaker
from dataplane.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    NoHealthyWorker,
    WorkerError,
)
from dataplane.gateway import Gateway
from dataplane.metrics import GatewayMetrics, error_type
from dataplane.types import Chunk, EngineLoad, Event, Usage, WireRequest, WorkerMessage
from tests.dataplane.gateways import EOS, MODEL, chat, started_gateway, until
from tests.dataplane.test_reliability import failing
from tests.fakes.worker import FakeClient, Script, complete
from tests.scrape import Scrape

ROUTER = {"router_type": "grpc", "backend_type": "regular", "model": MODEL}


def three_tokens(request: WireRequest) -> list[WorkerMessage]:
    n = len(request.input_ids)
    return [Chunk(0, [9707], n, 1, 0), Chunk(0, [1879], n, 2, 0), complete([0, EOS], prompt=n, matched=EOS)]


def scrape(gw: Gateway) -> Scrape:
    return Scrape(generate_latest(gw.metrics.registry).decode())


@contextlib.asynccontextmanager
async def gateway(model_dir: Path, scripts: list[Script], **config: Any) -> AsyncGenerator[Gateway, None]:
    config.setdefault("policy", "round_robin")
    gw = await started_gateway(model_dir, scripts, **config)
    try:
        yield gw
    finally:
        await gw.stop()


async def drain(gw: Gateway, **fields: Any) -> list[Event]:
    stream = gw.generate(chat(**fields))
    async with contextlib.aclosing(stream):
        return [event async for event in stream]


async def test_streamed_and_unary_requests(model_dir: Path) -> None:
    async with gateway(model_dir, [three_tokens]) as gw:
        streamed = await drain(gw, stream=True)
        done = await gw.collect(chat())
        got = scrape(gw)
    usage = next(e for e in streamed if isinstance(e, Usage))
    assert done.usage == usage
    requests = got.families["smg_router_requests"]
    assert requests.type == "counter"
    assert {tuple(sorted(s.labels)) for s in requests.samples} == {
        ("backend_type", "connection_mode", "endpoint", "model", "router_type", "streaming")
    }
    chat_labels = ROUTER | {"endpoint": "chat"}
    assert got.value("smg_router_requests_total", **chat_labels, streaming="true") == 1
    assert got.value("smg_router_requests_total", **chat_labels, streaming="false") == 1
    assert got.value("smg_router_request_duration_seconds_count", **chat_labels) == 2
    # Tokens of every request; latencies of the streamed one only (as SMG).
    assert got.value("smg_router_tokens_total", **chat_labels, token_type="input") == 2 * usage.prompt_tokens
    assert (
        got.value("smg_router_tokens_total", **chat_labels, token_type="output")
        == 2 * usage.completion_tokens
    )
    for name in (
        "smg_router_ttft_seconds",
        "smg_router_tpot_seconds",
        "smg_router_generation_duration_seconds",
    ):
        assert got.families[name].type == "histogram"
        assert got.value(f"{name}_count", **chat_labels) == 1
        assert got.value(f"{name}_bucket", **chat_labels, le="+Inf") == 1
    assert 0 < got.value("smg_router_ttft_seconds_sum") < got.value("smg_router_request_duration_seconds_sum")
    labels = {"worker_type": "regular", "connection_mode": "grpc", "model": MODEL, "policy": "round_robin"}
    assert got.value("smg_worker_selection_total", **labels) == 2
    assert got.value("smg_worker_requests_total", worker="grpc://127.0.0.1:9000", model=MODEL) == 2
    assert got.value("smg_router_request_errors_total") == 0
    assert not [s for s in got.samples if s.name.endswith("_created")]  # SMG exports none


def test_tpot_is_the_time_per_token_after_the_first() -> None:
    metrics = GatewayMetrics("random", (0.001, 1.0))
    meter = metrics.request(MODEL, "chat", True)
    meter.first_token()
    time.sleep(0.01)  # the interval measured, not a wait for something
    meter.succeeded([Usage(prompt_tokens=5, completion_tokens=11)])
    got = Scrape(generate_latest(metrics.registry).decode())
    generation = got.value("smg_router_generation_duration_seconds_sum")
    assert generation >= 0.01
    assert got.value("smg_router_tpot_seconds_sum") == pytest.approx(generation / 10)
    assert [float(s["le"]) for s in got.labels("smg_router_tpot_seconds_bucket")] == [
        0.001,
        1.0,
        float("inf"),
    ]


async def test_retries_backoff_exhaustion_and_worker_errors(model_dir: Path) -> None:
    def fails_on_request(request: WireRequest) -> list[WorkerMessage | WorkerError]:
        return failing(503)(request) if "[fail]" in request.original_text else three_tokens(request)

    async with gateway(model_dir, [failing(503), fails_on_request], disable_circuit_breaker=True) as gw:
        await gw.collect(chat())  # the first worker fails, the second answers
        with pytest.raises(WorkerError):
            await gw.collect(chat(content="[fail]"))  # every attempt fails
        got = scrape(gw)
    assert got.value("smg_worker_retries_total", worker_type="regular", endpoint="chat") == 1 + 4
    assert got.value("smg_worker_retries_exhausted_total", worker_type="regular", endpoint="chat") == 1
    assert got.value("smg_worker_retry_backoff_seconds_count", attempt="1") == 2
    assert got.value("smg_worker_retry_backoff_seconds_count", attempt="4") == 1
    assert got.value("smg_worker_errors_total", error_type="backend_error") == 1 + 5
    chat_labels = ROUTER | {"endpoint": "chat"}
    assert got.value("smg_router_request_errors_total", **chat_labels, error_type="backend_error") == 1
    assert got.value("smg_router_request_duration_seconds_count", **chat_labels) == 1  # successes only
    assert got.value("smg_worker_cb_outcomes_total", outcome="failure") == 6
    assert got.value("smg_worker_cb_outcomes_total", worker="grpc://127.0.0.1:9001", outcome="success") == 1


async def test_errors_by_type_and_unknown_models_as_other(model_dir: Path) -> None:
    async with gateway(model_dir, [three_tokens]) as gw:
        with pytest.raises(ModelNotFound):
            gw.generate(chat(model="client/made-up"))
        with pytest.raises(InvalidRequest):
            gw.generate(chat(max_tokens=10**9))  # past the context length
        got = scrape(gw)
    other = {"router_type": "grpc", "backend_type": "regular", "model": "other", "endpoint": "chat"}
    assert got.value("smg_router_request_errors_total", **other, error_type="no_workers") == 1
    served = ROUTER | {"endpoint": "chat", "error_type": "validation_error"}
    assert got.value("smg_router_request_errors_total", **served) == 1
    assert got.value("smg_router_requests_total", **other, streaming="false") == 1
    assert "client/made-up" not in {
        value for labels in (s.labels for s in got.samples) for value in labels.values()
    }


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (NoHealthyWorker("x"), "no_workers"),
        (ModelNotFound("x"), "no_workers"),
        (InvalidRequest("x"), "validation_error"),
        (WorkerError("x", status=503), "backend_error"),
        (WorkerError("x", status=504), "timeout"),
        (InternalError("x"), "internal_error"),
    ],
)
def test_error_types(exc: GatewayError, kind: str) -> None:
    assert error_type(exc) == kind


async def test_worker_state_is_read_at_scrape_time(model_dir: Path) -> None:
    async with gateway(model_dir, [three_tokens, three_tokens], cb_failure_threshold=1) as gw:
        first, second = gw.registry.all()
        first.load = 2  # a lease in flight
        first.engine_load = EngineLoad(
            running_requests=3, waiting_requests=1, token_usage=0.25, gen_throughput=9.5
        )
        gw.registry.record_outcome(second, 503)  # opens its breaker
        got = scrape(gw)
        first.load = 0
    w0, w1 = first.url.url, second.url.url
    assert got.families["smg_worker_health"].type == "gauge"
    assert got.value("smg_worker_health", worker=w0) == 1 and got.value("smg_worker_health", worker=w1) == 1
    assert got.value("smg_worker_requests_active", worker=w0) == 2
    assert (
        got.value("smg_worker_cb_state", worker=w0) == 0 and got.value("smg_worker_cb_state", worker=w1) == 1
    )
    assert got.value("smg_worker_cb_consecutive_failures", worker=w1) == 1
    assert got.value("smg_worker_cb_transitions_total", worker=w1, **{"from": "closed", "to": "open"}) == 1
    pool = {"worker_type": "regular", "connection_mode": "grpc", "model": MODEL}
    assert got.value("smg_worker_pool_size", **pool) == 2
    engine = {"worker": w0, "model": MODEL}
    assert got.value("smg_engine_running_requests", **engine) == 3
    assert got.value("smg_engine_waiting_requests", **engine) == 1
    assert got.value("smg_engine_token_usage", **engine) == 0.25
    assert got.value("smg_engine_gen_throughput", **engine) == 9.5
    assert got.labels("smg_engine_running_requests") == [engine]  # the other worker reports no load
    assert got.value("process_resident_memory_bytes") > 0


class Transitions:
    def __init__(self) -> None:
        self.seen: list[tuple[BreakerState, BreakerState]] = []
        self.outcomes: list[bool] = []

    def outcome(self, success: bool) -> None:
        self.outcomes.append(success)

    def transition(self, old: BreakerState, new: BreakerState) -> None:
        self.seen.append((old, new))


def test_the_breaker_reports_every_transition_and_outcome() -> None:
    now = [0.0]
    observer = Transitions()
    breaker = CircuitBreaker(
        BreakerConfig(failure_threshold=2, success_threshold=2, timeout_secs=5), lambda: now[0], observer
    )
    for status in (503, 200, 503, 503):  # a success in between resets the count
        breaker.record(status)
    assert breaker.state == "open" and breaker.consecutive_failures == 2
    now[0] = 5.0
    assert breaker.state == "half_open"
    breaker.record(503)
    now[0] = 10.0
    for _ in range(2):
        breaker.record(200)
    assert breaker.state == "closed" and breaker.consecutive_successes == 2
    assert observer.seen == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("open", "half_open"),
        ("half_open", "closed"),
    ]  # fmt: skip
    assert observer.outcomes == [False, True, False, False, False, True, True]


async def test_health_checks_are_counted_by_result(model_dir: Path) -> None:
    config = {"health_check_interval_secs": 0.02, "disable_health_check": False}
    async with gateway(model_dir, [three_tokens, three_tokens], **config) as gw:
        sick = gw.registry.all()[1]
        assert isinstance(sick.client, FakeClient)
        sick.client.healthy = False
        checks = "smg_worker_health_checks_total"
        await until(lambda: scrape(gw).value(checks, worker_type="regular", result="failure") >= 2)
        got = scrape(gw)
    assert got.families["smg_worker_health_checks"].type == "counter"
    assert got.label_names("smg_worker_health_checks") == {("result", "worker_type")}
    # The healthy worker passed at least every probe round the sick one failed in.
    assert got.value(checks, result="success") >= got.value(checks, result="failure") >= 2
