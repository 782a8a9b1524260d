"""The direct OTLP span encoder writes what the SDK's own encoder writes: both parsed and compared."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from adapters.otlp_encoder import encode_request
from adapters.tracer import LeanTracerProvider

RESOURCE = Resource.create({"service.name": "smg", "service.instance.id": "a1"})
OTHER_RESOURCE = Resource({"service.name": "other"}, schema_url="https://opentelemetry.io/schemas/1.21.0")
SCOPE = InstrumentationScope("smg", "1.2.3", "https://schema", {"scope.attr": 1})


def context(
    trace_id: int = 0x0AF7651916CD43DD8448EB211C80319C, span_id: int = 0xB7AD, **kw: Any
) -> SpanContext:
    return SpanContext(
        trace_id, span_id, is_remote=kw.pop("is_remote", False), trace_flags=TraceFlags(1), **kw
    )


def span(name: str = "generate", **fields: Any) -> ReadableSpan:
    fields.setdefault("context", context(span_id=0x1234))
    fields.setdefault("resource", RESOURCE)
    fields.setdefault("start_time", 1_700_000_000_000_000_000)
    fields.setdefault("end_time", 1_700_000_000_123_456_789)
    return ReadableSpan(name=name, **fields)


def same_as_sdk(spans: list[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_request(spans))
    assert ours == encode_spans(spans)


def test_every_span_field() -> None:
    same_as_sdk([
        span(
            "POST /v1/chat/completions",
            context=context(span_id=0x42, trace_state=TraceState([("vendor", "1"), ("other", "x")])),
            parent=context(span_id=0x77, is_remote=True),
            kind=SpanKind.SERVER,
            attributes={"http.response.status_code": 200, "smg.request_id": "chatcmpl-é🤖", "ok": True},
            events=(Event("first_token", {"n": 1}, timestamp=1_700_000_000_000_500_000), Event("e", None, 5)),
            links=(Link(context(span_id=0x99), {"link.attr": "v"}),),
            status=Status(StatusCode.ERROR, "worker is down"),
            instrumentation_scope=SCOPE,
        ),
        span("tokenize", parent=context(span_id=0x42), kind=SpanKind.INTERNAL, instrumentation_scope=SCOPE),
        span("generate", kind=SpanKind.CLIENT, status=Status(StatusCode.OK)),
        span("other", resource=OTHER_RESOURCE, kind=SpanKind.PRODUCER),
        span("consumer", kind=SpanKind.CONSUMER, start_time=0, end_time=None),
    ])  # fmt: skip


def test_attribute_values_of_every_shape() -> None:
    values: dict[str, Any] = {
        "none": None,
        "negative": -5,
        "int64 max": 2**63 - 1,
        "int64 min": -(2**63),
        "float": 0.25,
        "bytes": b"\x00\xff",
        "strings": ("stop", "length"),
        "mixed": [1, "a", True, 2.5],
        "empty": (),
        "mapping": {"inner": {"deeper": [1, 2]}, "b": False},
        "unsupported": object(),  # left out, as the SDK's encoder leaves it out
        "nested unsupported": [object()],
    }
    same_as_sdk([span(attributes=values)])


def test_attributes_are_cached_by_type_as_well_as_value() -> None:
    # True == 1 == 1.0 as dictionary keys; each must keep its own encoding.
    same_as_sdk([span(attributes={"x": True}), span(attributes={"x": 1}), span(attributes={"x": 1.0})])


scalars = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.one_of(scalars, st.lists(scalars, max_size=4)), max_size=6))
def test_any_attributes(attributes: dict[str, Any]) -> None:
    same_as_sdk([span(attributes=attributes)])


def test_equal_values_of_other_bits_or_types_are_not_confused_by_the_cache() -> None:
    """Found by test_any_attributes: 0.0 == -0.0 (and True == 1 == 1.0) as dictionary keys."""
    for value in (0.0, -0.0, 0.0, 1, True, 1.0, 1):
        same_as_sdk([span(attributes={"x": value})])


def test_the_lean_tracers_spans_encode_as_the_sdks_encoder_reads_them() -> None:
    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider(RESOURCE, 1.0, SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("smg", "1.2.3")
    caller = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "k=v"}
    )
    server = tracer.start_span("POST /v1/chat/completions", caller, kind=SpanKind.SERVER)
    below = trace.set_span_in_context(server)
    with tracer.start_span("tokenize", below):
        pass
    generate = tracer.start_span("generate", below, kind=SpanKind.CLIENT, attributes={"a": 1})
    generate.add_event("first_token")
    generate.add_event("second", {"n": 2}, timestamp=5)
    generate.set_attributes({"gen_ai.response.finish_reasons": ("length",), "gen_ai.usage.output_tokens": 64})
    generate.set_status(Status(StatusCode.ERROR, "worker is down"))
    generate.end()
    server.end()
    spans = list(exporter.get_finished_spans())
    assert [s.name for s in spans] == ["tokenize", "generate", "POST /v1/chat/completions"]
    same_as_sdk(spans)
    assert [e.name for e in spans[1].events] == ["first_token", "second"] and spans[0].events == ()
    assert (spans[1].dropped_attributes, spans[1].dropped_events, spans[1].dropped_links) == (0, 0, 0)
    # Every field ReadableSpan.__init__ sets is there (on the span, or shared by its class), so the SDK's
    # own methods work on lean spans.
    assert all(hasattr(span, field) for field in vars(ReadableSpan("x")) for span in spans)
    assert json.loads(spans[1].to_json())["resource"]["attributes"]["service.name"] == "smg"
