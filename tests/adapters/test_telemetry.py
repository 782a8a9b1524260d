"""Tracing configuration (flags over ``OTEL_*`` variables over defaults), the SDK the entrypoint builds,
and the SERVER-span middleware, with spans recorded by the real SDK into memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from adapters import cli
from adapters.app import errors_middleware
from adapters.context import REQUEST_ID_HEADERS
from adapters.router_args import UNSUPPORTED_FLAGS
from adapters.span_batcher import SpanBatcher
from adapters.telemetry import EXPORT_BATCH_SIZE, ExportSettings, export_settings, tracer_provider
from adapters.tracer import _ended
from adapters.tracing import tracing_middleware
from dataplane.config import TracingConfig
from dataplane.errors import ConfigError, WorkerError

WORKER = ["--worker-urls", "grpc://127.0.0.1:31000"]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_tracing_flags_are_supported() -> None:
    for flag in ("enable-trace", "otlp-traces-endpoint"):
        assert flag not in UNSUPPORTED_FLAGS
    config = cli.parse_launch(
        [*WORKER, "--enable-trace", "--otlp-traces-endpoint", "collector:4317",
         "--otlp-traces-protocol", "http/protobuf", "--trace-sampling-ratio", "0.25"]
    )  # fmt: skip
    assert config.tracing == TracingConfig(True, "collector:4317", "http/protobuf", 0.25)
    assert cli.parse_launch(WORKER).tracing == TracingConfig()


@pytest.mark.parametrize(
    "args", [["--trace-sampling-ratio", "1.5"], ["--otlp-traces-endpoint", " "]], ids=["ratio", "endpoint"]
)
def test_bad_tracing_values_are_refused(args: list[str]) -> None:
    with pytest.raises(ConfigError):
        cli.parse_launch([*WORKER, "--enable-trace", *args])


def test_an_unknown_protocol_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["launch", *WORKER, "--otlp-traces-protocol", "http/json"]) == 2
    assert "--otlp-traces-protocol" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "environ", "expected"),
    [
        (TracingConfig(), {}, ExportSettings("http://localhost:4317", "grpc", 1.0)),
        # SMG: http:// is prepended to a bare host:port
        (TracingConfig(endpoint="otel:4317"), {}, ExportSettings("http://otel:4317", "grpc", 1.0)),
        (TracingConfig(endpoint="https://otel:443"), {}, ExportSettings("https://otel:443", "grpc", 1.0)),
        (
            TracingConfig(protocol="http/protobuf"),
            {},
            ExportSettings("http://localhost:4318/v1/traces", "http/protobuf", 1.0),
        ),
        (
            TracingConfig(endpoint="otel:4318", protocol="http/protobuf"),
            {},
            ExportSettings("http://otel:4318/v1/traces", "http/protobuf", 1.0),
        ),
        (
            TracingConfig(endpoint="http://otel:4318/custom", protocol="http/protobuf"),
            {},
            ExportSettings("http://otel:4318/custom", "http/protobuf", 1.0),
        ),
        # the standard variables, when no flag says otherwise
        (
            TracingConfig(),
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
            ExportSettings("http://env:4317", "grpc", 0.1),
        ),
        (
            TracingConfig(),
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318",
            },
            ExportSettings("http://env:4318/v1/traces", "http/protobuf", 1.0),
        ),
        (
            TracingConfig(),
            {
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env:4318/traces",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4318",
            },
            ExportSettings("http://env:4318/traces", "http/protobuf", 1.0),
        ),
        (
            TracingConfig(endpoint="flag:1", protocol="grpc", sampling_ratio=0.0),
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env:2",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_TRACES_SAMPLER_ARG": "0.5",
            },
            ExportSettings("http://flag:1", "grpc", 0.0),
        ),
    ],
)
def test_export_settings(config: TracingConfig, environ: dict[str, str], expected: ExportSettings) -> None:
    assert export_settings(config, environ) == expected


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_TRACES_SAMPLER_ARG": "lots"},
        {"OTEL_TRACES_SAMPLER_ARG": "2"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://collector:21"},
    ],
)
def test_bad_variables_fail_at_start_up(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        export_settings(TracingConfig(enabled=True), environ)


def test_the_provider_names_the_service_and_samples_by_ratio_below_a_sampled_caller() -> None:
    exporter = InMemorySpanExporter()
    settings = ExportSettings("http://localhost:4317", "grpc", 0.0)
    provider = tracer_provider(settings, {"OTEL_SERVICE_NAME": "gateway-eu"}, exporter)
    tracer = provider.get_tracer("test")
    tracer.start_span("new trace").end()  # ratio 0: never sampled
    caller = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    tracer.start_span("below a sampled caller", set_span_in_context(NonRecordingSpan(caller))).end()
    provider.force_flush()
    assert [s.name for s in exporter.get_finished_spans()] == ["below a sampled caller"]
    provider.shutdown()
    default = tracer_provider(
        ExportSettings("http://localhost:4317", "grpc", 1.0), {}, InMemorySpanExporter()
    )
    assert default.resource.attributes["service.name"] == "smg"
    assert provider.resource.attributes["service.name"] == "gateway-eu"
    default.shutdown()


class BatchSizes(InMemorySpanExporter):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.sizes.append(len(spans))
        return super().export(spans)


@pytest.mark.parametrize(
    ("environ", "largest"),
    [
        ({}, EXPORT_BATCH_SIZE),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100", "OTEL_BSP_MAX_QUEUE_SIZE": "4096"}, 100),
    ],
    ids=["ours", "OTEL_BSP_*"],
)
def test_spans_leave_in_large_batches_unless_the_variables_say_otherwise(
    environ: dict[str, str], largest: int
) -> None:
    exporter = BatchSizes()
    provider = tracer_provider(ExportSettings("http://localhost:4317", "grpc", 1.0), environ, exporter)
    tracer = provider.get_tracer("test")
    for _ in range(EXPORT_BATCH_SIZE + 50):
        tracer.start_span("stage").end()
    provider.shutdown()
    assert sum(exporter.sizes) == EXPORT_BATCH_SIZE + 50  # none dropped
    assert max(exporter.sizes) == largest


def test_ended_spans_go_straight_into_the_batch_queue() -> None:
    """What the lean tracer calls when a span ends is the batch queue's own ``append``: no Python frame."""
    provider = tracer_provider(ExportSettings("http://localhost:4317", "grpc", 1.0), {}, BatchSizes())
    processor = provider.processor
    assert isinstance(processor, SpanBatcher)
    ended = _ended(processor)
    assert ended == processor.enqueue and type(ended).__name__ == "builtin_function_or_method"
    provider.shutdown()


# ---- the SERVER span middleware ----------------------------------------------------------------------


@pytest.fixture
async def traced_app() -> AsyncIterator[tuple[str, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    async def down(request: web.Request) -> web.Response:
        raise WorkerError("worker is down", status=503)

    app = web.Application(middlewares=[tracing_middleware(provider.get_tracer("test")), errors_middleware])
    app[REQUEST_ID_HEADERS] = ("x-request-id",)
    app.router.add_get("/items/{item_id}", ok)
    app.router.add_get("/down", down)
    app.router.add_get("/health", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", exporter
    await runner.cleanup()


async def get(url: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        return reply.status


async def test_the_server_span_continues_the_caller_and_names_the_route(
    traced_app: tuple[str, InMemorySpanExporter],
) -> None:
    base, exporter = traced_app
    assert await get(f"{base}/items/42", traceparent=TRACEPARENT) == 200
    (span,) = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("GET /items/{item_id}", SpanKind.SERVER)
    assert span.parent is not None and span.parent.is_remote
    assert (span.parent.trace_id, span.parent.span_id) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )
    attributes: dict[str, Any] = dict(span.attributes or {})
    assert attributes == {
        "http.request.method": "GET",
        "url.path": "/items/42",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
    }


async def test_a_5xx_fails_the_server_span_and_unknown_paths_and_probes_stay_quiet(
    traced_app: tuple[str, InMemorySpanExporter],
) -> None:
    base, exporter = traced_app
    assert await get(f"{base}/down") == 503
    assert await get(f"{base}/health") == 200
    assert await get(f"{base}/nowhere") == 404
    down, unknown = exporter.get_finished_spans()
    assert (down.name, down.status.status_code) == ("GET /down", StatusCode.ERROR)
    assert down.attributes is not None and down.attributes["http.response.status_code"] == 503
    assert (unknown.name, unknown.status.status_code) == ("GET", StatusCode.UNSET)
