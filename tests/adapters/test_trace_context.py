"""The installed W3C TraceContext propagator writes and reads what the SDK's does."""

from __future__ import annotations

from collections.abc import MutableMapping

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import DefaultGetter, DefaultSetter
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    TraceState,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from adapters.trace_context import TraceContextPropagator

OURS, SDK = TraceContextPropagator(), TraceContextTextMapPropagator()
CONTEXTS = [
    SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1)),
    SpanContext(1, 1, True, TraceFlags(0)),
    SpanContext((1 << 128) - 1, (1 << 64) - 1, False, TraceFlags(3), TraceState([("vendor", "a=1")])),
    SpanContext(0, 5, False),  # invalid: no trace id
]


class BracketSetter(DefaultSetter):
    """A setter of its own: the propagator must call it, not write into the carrier itself."""

    def set(self, carrier: MutableMapping[str, list[str] | str], key: str, value: list[str] | str) -> None:
        carrier[key] = f"[{value}]"


@pytest.mark.parametrize("span_context", CONTEXTS, ids=["sampled", "remote", "tracestate", "invalid"])
@pytest.mark.parametrize("setter", [None, BracketSetter()], ids=["default", "own-setter"])
def test_what_is_injected_is_what_the_sdk_injects(
    span_context: SpanContext, setter: DefaultSetter | None
) -> None:
    context = set_span_in_context(NonRecordingSpan(span_context))
    ours: dict[str, list[str] | str] = {}
    sdk: dict[str, list[str] | str] = {}
    if setter is None:
        OURS.inject(ours, context)
        SDK.inject(sdk, context)
    else:
        OURS.inject(ours, context, setter)
        SDK.inject(sdk, context, setter)
    if span_context.is_valid:
        assert ours == sdk
        assert "traceparent" in ours
    else:  # the SDK writes an all-zero trace id, which W3C receivers discard; nothing is written here
        assert ours == {}


def test_nothing_is_injected_without_a_span() -> None:
    carrier: dict[str, list[str] | str] = {}
    OURS.inject(carrier, Context())
    OURS.inject(carrier, set_span_in_context(INVALID_SPAN))
    assert carrier == {}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        {"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", "tracestate": "v=1"},
        {"traceparent": "not a traceparent"},
    ],
    ids=["none", "other", "upper-case", "tracestate", "malformed"],
)
def test_what_is_extracted_is_what_the_sdk_extracts(headers: dict[str, str]) -> None:
    carrier = CIMultiDictProxy(CIMultiDict(headers))  # aiohttp's request headers
    base = set_span_in_context(NonRecordingSpan(CONTEXTS[1]))
    for context in (None, base):
        ours = get_current_span(OURS.extract(carrier, context)).get_span_context()
        sdk = get_current_span(SDK.extract(carrier, context)).get_span_context()
        assert ours == sdk
    getter = DefaultGetter()  # any getter but the default one goes through the SDK's code
    ours = get_current_span(OURS.extract(carrier, None, getter)).get_span_context()
    assert ours == get_current_span(SDK.extract(carrier, None, getter)).get_span_context()
