"""The data plane's spans against in-memory workers, recorded by the real SDK into memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from dataplane.config import GatewayConfig, TracingConfig, WorkerUrl
from dataplane.errors import WorkerError
from dataplane.gateway import Gateway
from dataplane.telemetry import proxy_attempt
from dataplane.tokenizer import ModelTokenizer
from dataplane.types import Chunk, Started, WireRequest, WorkerMessage
from tests.dataplane.gateways import EOS, Fleet, chat, client, hello, info, until, url
from tests.fakes.worker import Script, complete

CLIENT_CARRIER = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@contextlib.asynccontextmanager
async def gateway_over(
    model_dir: Path, scripts: Sequence[Script], provider: TracerProvider | None, **config: Any
) -> AsyncIterator[Gateway]:
    fleet = Fleet()
    for i, script in enumerate(scripts):
        fleet.add(i, script, info(model_dir))
    settings = GatewayConfig(
        worker_urls=tuple(WorkerUrl.parse(url(i)) for i in range(len(scripts))),
        policy="round_robin",
        disable_health_check=True,
        retry_initial_backoff_ms=1.0,
        tracing=TracingConfig(enabled=provider is not None),
        **config,
    )
    gateway = Gateway(settings, fleet, provider)
    await gateway.start()
    try:
        await until(lambda: gateway.registry.ready_count() == len(scripts), timeout=10)
        yield gateway
    finally:
        await gateway.stop()


@contextlib.contextmanager
def request_span(provider: TracerProvider) -> Iterator[trace.Span]:
    """What the HTTP adapter's middleware does: a SERVER span, current while the request is handled."""
    with provider.get_tracer("test").start_as_current_span("request", kind=SpanKind.SERVER) as span:
        yield span


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    spans: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.name, []).append(span)
    return spans


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_without_tracing_the_client_trace_headers_go_through_unchanged(model_dir: Path) -> None:
    async with gateway_over(model_dir, [hello], None) as gateway:
        assert gateway.tracer is None
        await gateway.collect(chat(trace_carrier=CLIENT_CARRIER))
        assert dict(client(gateway, 0).requests[0].metadata) == CLIENT_CARRIER


async def test_stages_hang_below_the_current_span_and_the_worker_gets_the_generate_span(
    model_dir: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with gateway_over(model_dir, [hello], provider) as gateway:
        with request_span(provider) as parent:
            done = await gateway.collect(chat(trace_carrier=CLIENT_CARRIER, max_tokens=7, temperature=0.25))
    spans = by_name(exporter)
    assert set(spans) == {"request", "chat_template", "tokenize", "select_worker", "generate"}
    parent_id = parent.get_span_context().span_id
    for name in ("chat_template", "tokenize", "select_worker", "generate"):
        (span,) = spans[name]
        assert span.parent is not None and span.parent.span_id == parent_id, name
    (generate,) = spans["generate"]
    assert generate.kind is SpanKind.CLIENT
    assert client(gateway, 0).requests[0].metadata == {"traceparent": traceparent(generate)}
    attributes = dict(generate.attributes or {})
    assert attributes == attributes | {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "test/model",
        "gen_ai.request.max_tokens": 7,
        "gen_ai.request.temperature": 0.25,
        "gen_ai.usage.input_tokens": done.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": done.usage.completion_tokens,
        "gen_ai.response.finish_reasons": ("stop",),
        "smg.request_id": "req-1",
        "server.address": "127.0.0.1",
        "server.port": 9000,
    }
    assert "smg.attempt" not in attributes
    assert [event.name for event in generate.events] == ["first_token"]


async def test_a_sampled_out_request_records_nothing_and_still_propagates(
    model_dir: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    unsampled = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    async with gateway_over(model_dir, [hello], provider) as gateway:
        with trace.use_span(NonRecordingSpan(unsampled)):
            await gateway.collect(chat())
    assert exporter.get_finished_spans() == ()
    version, trace_id, span_id, flags = client(gateway, 0).requests[0].metadata["traceparent"].split("-")
    assert (version, int(trace_id, 16)) == ("00", 0x1234)
    assert int(span_id, 16) not in (0, 0x5678)  # the gateway's own span
    assert not int(flags, 16) & 1


async def test_each_attempt_is_a_generate_span_and_a_failed_one_says_why(
    model_dir: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    def unavailable(request: WireRequest) -> Sequence[WorkerMessage | WorkerError]:
        return [WorkerError("worker is down", status=503)]

    async with gateway_over(model_dir, [unavailable, hello], provider) as gateway:
        with request_span(provider):
            await gateway.collect(chat())
    spans = by_name(exporter)
    assert len(spans["select_worker"]) == 2
    failed, succeeded = sorted(spans["generate"], key=lambda s: s.start_time or 0)
    assert failed.status.status_code is StatusCode.ERROR and failed.status.description == "worker is down"
    assert failed.attributes is not None and failed.attributes["error.type"] == "worker_error"
    assert succeeded.status.status_code is StatusCode.UNSET
    assert succeeded.attributes is not None and succeeded.attributes["smg.attempt"] == 1
    # Each attempt carried its own span to its worker.
    assert client(gateway, 0).requests[0].metadata == {"traceparent": traceparent(failed)}
    assert client(gateway, 1).requests[0].metadata == {"traceparent": traceparent(succeeded)}


async def test_a_client_that_leaves_marks_the_attempt_cancelled(
    model_dir: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    never = asyncio.Event()

    def stalls(request: WireRequest) -> Sequence[WorkerMessage | asyncio.Event]:
        return [Chunk(0, [9707], len(request.input_ids), 1, 0), never, complete([EOS], matched=EOS)]

    async with gateway_over(model_dir, [stalls], provider) as gateway:
        with request_span(provider):
            stream = gateway.generate(chat(stream=True))
            assert isinstance(await anext(stream), Started)
            await stream.aclose()
    (generate,) = by_name(exporter)["generate"]
    assert generate.attributes is not None and generate.attributes["smg.cancelled"] is True


async def test_the_parse_stage_is_a_span_when_it_runs(
    model_dir: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with gateway_over(model_dir, [hello], provider, reasoning_parser="qwen3") as gateway:
        with request_span(provider) as parent:
            await gateway.collect(chat())
    (parse,) = by_name(exporter)["parse"]
    assert parse.parent is not None and parse.parent.span_id == parent.get_span_context().span_id
    assert parse.attributes == {"smg.parse.reasoning_parser": "qwen3", "smg.parse.tool_calls": 0}


async def test_tool_calls_are_counted_on_the_parse_span_and_finish_the_generate_span(
    model_dir: Path, qwen: ModelTokenizer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    ids = qwen.encode(text)

    def calls_a_tool(request: WireRequest) -> Sequence[WorkerMessage]:
        chunks = [Chunk(0, ids[i : i + 4], len(request.input_ids), i + 4, 0) for i in range(0, len(ids), 4)]
        return [*chunks, complete([EOS], matched=EOS)]

    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    async with gateway_over(model_dir, [calls_a_tool], provider, tool_call_parser="qwen") as gateway:
        with request_span(provider):
            done = await gateway.collect(chat(tools=(weather,), stream=True))
    assert [call.name for call in done.choices[0].tool_calls] == ["get_weather"]
    spans = by_name(exporter)
    (parse,) = spans["parse"]
    assert parse.attributes is not None and parse.attributes["smg.parse.tool_calls"] == 1
    assert parse.attributes["smg.parse.tool_mode"] == "parser"
    (generate,) = spans["generate"]
    assert generate.attributes is not None
    assert generate.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)


# ---- proxied (HTTP-worker) attempts -----------------------------------------------------------------


def test_a_proxied_attempt_without_tracing_forwards_the_headers_as_they_are() -> None:
    with proxy_attempt(None, "m", "10.0.0.1", 8000, 0, CLIENT_CARRIER) as (headers, span):
        assert (headers, span) == (CLIENT_CARRIER, None)


def test_a_proxied_attempt_is_a_client_span_below_the_current_one_carried_to_the_worker(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("server") as server,
        proxy_attempt(tracer, "m", "10.0.0.1", 8000, 1, CLIENT_CARRIER) as (headers, span),
    ):
        assert span is not None
        context = span.get_span_context()
    (attempt,) = [s for s in exporter.get_finished_spans() if s.name == "generate"]
    assert attempt.kind is SpanKind.CLIENT and attempt.parent == server.get_span_context()
    assert dict(attempt.attributes or {}) == {
        "gen_ai.request.model": "m", "server.address": "10.0.0.1", "server.port": 8000, "smg.attempt": 1
    }  # fmt: skip
    ids = f"{context.trace_id:032x}-{context.span_id:016x}"
    assert headers["traceparent"] == f"00-{ids}-{context.trace_flags:02x}"
    assert CLIENT_CARRIER["traceparent"] != headers["traceparent"]  # the client's own is not changed


@pytest.mark.parametrize(
    ("raised", "status", "attributes"),
    [
        (WorkerError("worker is down", status=503), StatusCode.ERROR, {"error.type": "worker_error"}),
        (asyncio.CancelledError(), StatusCode.UNSET, {"smg.cancelled": True}),
    ],
    ids=["failed", "client left"],
)
def test_a_proxied_attempt_ends_failed_or_cancelled(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    raised: BaseException,
    status: StatusCode,
    attributes: dict[str, Any],
) -> None:
    tracer = provider.get_tracer("test")
    with pytest.raises(type(raised)), proxy_attempt(tracer, "m", "10.0.0.1", 8000, 0, {}):
        raise raised
    (attempt,) = exporter.get_finished_spans()
    assert attempt.status.status_code is status
    assert attributes.items() <= dict(attempt.attributes or {}).items()
