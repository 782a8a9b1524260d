"""The batch span processor: when spans leave, in what batches, what a full queue and a failing exporter
do, and its ``OTEL_BSP_*`` settings — with real spans from the lean tracer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from adapters.span_batcher import MAX_EXPORT_BATCH_SIZE, MAX_QUEUE_SIZE, SpanBatcher
from adapters.tracer import LeanTracerProvider


class Recorder(SpanExporter):
    """Batches as exported (span names), ``failures`` first raising; ``gate`` holds exports until set."""

    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures
        self.gate = gate
        self.exporting = threading.Event()
        self.shut_down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("collector unreachable")
        self.batches.append([span.name for span in spans])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut_down = True

    def names(self) -> list[str]:
        return [name for batch in self.batches for name in batch]


def spans(batcher: SpanBatcher, count: int, prefix: str = "s") -> None:
    tracer = LeanTracerProvider(Resource.create({}), 1.0, batcher).get_tracer("test")
    for i in range(count):
        tracer.start_span(f"{prefix}{i}").end()


def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_batch_leaves_without_waiting_for_the_schedule_delay() -> None:
    exporter = Recorder()
    batcher = SpanBatcher(
        exporter, max_queue_size=100, max_export_batch_size=10, schedule_delay_millis=60_000
    )
    spans(batcher, 25)
    until(lambda: len(exporter.batches) == 2)
    time.sleep(0.2)  # the 5 left wait for the delay
    assert exporter.batches == [[f"s{i}" for i in range(10)], [f"s{i}" for i in range(10, 20)]]
    batcher.shutdown()
    assert exporter.names() == [f"s{i}" for i in range(25)]  # the rest at shutdown, in order
    assert exporter.shut_down


def test_a_partial_batch_leaves_after_the_schedule_delay() -> None:
    exporter = Recorder()
    batcher = SpanBatcher(exporter, max_queue_size=100, max_export_batch_size=50, schedule_delay_millis=800)
    spans(batcher, 3)
    time.sleep(0.2)
    assert exporter.batches == []
    until(lambda: exporter.batches == [["s0", "s1", "s2"]])
    batcher.shutdown()


def test_force_flush_exports_everything_queued_then_shutdown_stops_exports() -> None:
    exporter = Recorder()
    batcher = SpanBatcher(exporter, max_queue_size=100, max_export_batch_size=4, schedule_delay_millis=60_000)
    spans(batcher, 3)
    assert batcher.force_flush()
    assert exporter.batches == [["s0", "s1", "s2"]]
    batcher.shutdown()
    batcher.on_end(ReadableSpan("after"))
    assert not batcher.force_flush()
    assert exporter.names() == ["s0", "s1", "s2"]
    batcher.shutdown()  # twice is harmless


def test_a_full_queue_drops_the_oldest_spans_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    exporter = Recorder(gate=gate)
    batcher = SpanBatcher(exporter, max_queue_size=4, max_export_batch_size=4, schedule_delay_millis=60_000)
    spans(batcher, 4, "first")
    until(exporter.exporting.is_set)  # the export thread now waits in the exporter
    with caplog.at_level(logging.WARNING, logger="adapters.span_batcher"):
        spans(batcher, 6)  # 4 fit
        gate.set()
        until(lambda: len(exporter.batches) == 2)
    assert exporter.batches[1] == ["s2", "s3", "s4", "s5"]
    assert "queue is full" in caplog.text
    batcher.shutdown()


def test_a_failing_export_is_logged_and_the_next_batch_still_goes(caplog: pytest.LogCaptureFixture) -> None:
    exporter = Recorder(failures=1)
    batcher = SpanBatcher(exporter, max_queue_size=10, max_export_batch_size=2, schedule_delay_millis=60_000)
    with caplog.at_level(logging.ERROR, logger="adapters.span_batcher"):
        spans(batcher, 4)
        until(lambda: len(exporter.batches) == 1)
    assert exporter.batches == [["s2", "s3"]]
    assert "exporting 2 spans failed" in caplog.text
    batcher.shutdown()


@pytest.mark.parametrize(
    ("environ", "queue", "batch", "delay"),
    [
        ({}, MAX_QUEUE_SIZE, MAX_EXPORT_BATCH_SIZE, 5.0),
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8",
             "OTEL_BSP_SCHEDULE_DELAY": "250"},
            64, 8, 0.25,
        ),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "16", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "32"}, 16, 16, 5.0),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots", "OTEL_BSP_SCHEDULE_DELAY": "-1"}, MAX_QUEUE_SIZE, 512, 5.0),
    ],
    ids=["defaults", "variables", "batch-capped-by-queue", "bad-values"],
)  # fmt: skip
def test_settings_come_from_the_variables(
    environ: dict[str, str], queue: int, batch: int, delay: float
) -> None:
    batcher = SpanBatcher(Recorder(), environ=environ)
    assert (batcher._queue.maxlen, batcher.batch_size, batcher.schedule_delay) == (queue, batch, delay)
    batcher.shutdown()
