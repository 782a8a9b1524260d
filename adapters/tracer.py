"""A lean OpenTelemetry ``TracerProvider`` for the gateway's hot path, feeding a span processor.

Measured on the benchmark's workload (bench/tracing.py), the SDK's own tracer cost ~20-40 µs per span
(a sampler result, two validated attribute copies, locks and bounded lists per span, a second object at
the end) and made sampled tracing cost a quarter of the throughput with six spans per request. Spans here
are one object each — the span that ends *is* the ``ReadableSpan`` the processor gets — with plain
attribute dictionaries, and the parent-based ratio sampler is two comparisons.

Everything around it is the SDK's — ``Resource``, the id generator, the OTLP exporters, the
``TraceIdRatioBased`` arithmetic (so a given trace id is sampled exactly as by
``ParentBased(TraceIdRatioBased(ratio))``) — but for the batch processor, ``adapters/span_batcher.py``,
into whose queue an ended span goes with one C call. The data plane still sees only the OpenTelemetry API.
What it leaves out on purpose: span limits (our spans carry a handful of attributes), ``on_start``
callbacks (the batch processor has none) and attribute validation (the encoder, adapters/otlp_encoder.py,
leaves out a value OTLP cannot carry, as the SDK's encoder does).
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util._decorator import _agnosticcontextmanager
from opentelemetry.util.types import Attributes

from adapters.span_batcher import SpanBatcher

_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags.SAMPLED
_random_bits = random.getrandbits  # what RandomIdGenerator draws ids from
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_RANDOM = TraceFlags(TraceFlags.RANDOM_TRACE_ID)
_INHERITED = TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID  # what a child takes of its parent's flags
_FLAGS = tuple(TraceFlags(bits) for bits in range(_INHERITED + 1))  # made once, not per span


class LeanSpan(trace_api.Span, ReadableSpan):
    """A recording span that becomes its own ``ReadableSpan`` when it ends.

    A span sets only what is its own; what most spans keep as they started (no end yet, no events, no
    links, status unset) are class defaults, replaced on the instance when one changes, and what all
    spans of a tracer share (resource, scope, where they go when they end) are class attributes of the
    tracer's subclass (``LeanTracer``)."""

    _lean = True  # what the OTLP encoder looks for
    _end_time: int | None = None
    _events: Sequence[Event] = ()
    _links: Sequence[Link] = ()
    _status: Status = _UNSET
    _instrumentation_info = None
    _ended: Callable[[ReadableSpan], None]  # the processor's queue, or its on_end

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_time: int,
    ) -> None:
        # ReadableSpan.__init__'s fields that differ per span, set here: one call less per span.
        self._name = name
        self._context = context
        self._kind = kind
        self._parent = parent
        self._start_time = start_time
        self._attributes = attributes

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]

    # Nothing is ever dropped here (no limits); a copy of another span keeps its counts.
    _dropped: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def copy_of(cls, span: ReadableSpan) -> LeanSpan:
        """An ended ``LeanSpan`` with the fields of any ``ReadableSpan`` (the OTLP encoder reads ours)."""
        copy = cls.__new__(cls)
        copy._name = span.name
        copy._context = span.get_span_context()
        copy._kind = span.kind
        copy._instrumentation_scope = span.instrumentation_scope
        copy._parent = span.parent
        copy._start_time = span.start_time
        copy._end_time = span.end_time
        copy._attributes = dict(span.attributes or {})
        copy._events = tuple(span.events)
        copy._links = tuple(span.links)
        copy._resource = span.resource
        copy._status = span.status
        copy._dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)
        return copy

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is None:
            self._attributes[key] = value  # type: ignore[index]

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_time is None:
            self._attributes.update(attributes)  # type: ignore[union-attr]

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if self._end_time is None:
            self._events = (*self._events, Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._end_time is None and context.is_valid:
            self._links = (*self._links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, UNSET never overrides.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        qualname = (
            kind.__qualname__
            if kind.__module__ in ("builtins", "")
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        details = {
            "exception.type": qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        self.add_event("exception", {**details, **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is None:
            self._end_time = end_time or time.time_ns()
            self._ended(self)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self.is_recording():
            self.record_exception(exc, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.end()


def _ended(processor: SpanProcessor) -> Callable[[ReadableSpan], None]:
    """What a span that ends goes to: ``SpanBatcher``'s queue (one C call), else the processor's
    ``on_end``."""
    if isinstance(processor, SpanBatcher):
        return processor.enqueue
    return processor.on_end


class LeanTracer(trace_api.Tracer):
    def __init__(self, provider: LeanTracerProvider, scope: InstrumentationScope) -> None:
        self.provider = provider
        self.scope = scope
        shared = {
            "_resource": provider.resource,
            "_instrumentation_scope": scope,
            "_ended": staticmethod(_ended(provider.processor)),
        }
        self._span: type[LeanSpan] = type("LeanSpan", (LeanSpan,), shared)

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        provider = self.provider
        # trace_api.get_current_span(context), without its type check: only spans are stored there.
        current = (get_current() if context is None else context).get(_SPAN_KEY)
        parent: SpanContext | None = None if current is None else current.get_span_context()  # type: ignore[attr-defined]
        # A SpanContext is the tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid).
        if parent is not None and parent[5]:
            trace_id, _, _, parent_flags, state, _ = parent
            # Parent-based: the caller decided; its random-trace-id flag carries over.
            flags = _FLAGS[parent_flags & _INHERITED]
        else:
            parent, state = None, DEFAULT_TRACE_STATE
            trace_id = provider.ids.generate_trace_id()
            sampled = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < provider.bound
            flags = _SAMPLED_RANDOM if sampled else _RANDOM
        # RandomIdGenerator's span id, without its method call (0 is the one invalid id).
        span_id = _random_bits(64) or provider.ids.generate_span_id()
        # SpanContext(trace_id, span_id, False, flags, state) without re-checking ids that are valid.
        span_context = tuple.__new__(SpanContext, (trace_id, span_id, False, flags, state, True))
        if not flags & _SAMPLED:
            return trace_api.NonRecordingSpan(span_context)
        span = self._span(name, span_context, parent, kind, dict(attributes) if attributes else {},
                          start_time or time.time_ns())  # fmt: skip
        if links:
            span._links = tuple(links)
        return span

    @_agnosticcontextmanager  # as the API's and the SDK's tracers
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace_api.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace_api.use_span(span, end_on_exit, record_exception, set_status_on_exception) as current:
            yield current


class LeanTracerProvider(trace_api.TracerProvider):
    """Spans sampled by ``ParentBased(TraceIdRatioBased(ratio))``'s rule, ended into ``processor``."""

    def __init__(self, resource: Resource, ratio: float, processor: SpanProcessor) -> None:
        self.resource = resource
        self.processor = processor
        self.bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        self.ids = RandomIdGenerator()

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> LeanTracer:
        scope = InstrumentationScope(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        return LeanTracer(self, scope)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.processor.shutdown()
