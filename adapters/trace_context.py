"""The W3C TraceContext propagator the entrypoint installs: the SDK's, with fewer Python steps in the two
cases the gateway meets on every traced request.

Writing a span's context (``traceparent`` on each worker request) read four ``SpanContext`` properties,
two id formatters, a ``TraceState.__len__`` and a setter method; reading headers that carry no
``traceparent`` (most clients) built the lookup through the getter. Together ~100 opcodes per request of
the ~1,900 tracing cost the event loop (bench/tracing_opcodes.py). The headers written and the contexts
read are the SDK propagator's, which the tests check (but for a context that is not valid: the SDK writes
its all-zero ids, which W3C receivers discard, and nothing is written here); a getter of its own goes
through the SDK's code as is.
"""

from __future__ import annotations

from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import CarrierT, Getter, Setter, default_getter, default_setter
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, Span

TRACEPARENT = TraceContextTextMapPropagator._TRACEPARENT_HEADER_NAME
TRACESTATE = TraceContextTextMapPropagator._TRACESTATE_HEADER_NAME


class TraceContextPropagator(TraceContextTextMapPropagator):
    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        # The default getter reads ``carrier.get(name)``: a mapping without the header has no context.
        if getter is default_getter and TRACEPARENT not in carrier:  # type: ignore[operator]
            return Context() if context is None else context
        return super().extract(carrier, context, getter)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span: Span | None = (get_current() if context is None else context).get(_SPAN_KEY)  # type: ignore[assignment]
        if span is None:
            return
        # A SpanContext is the tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid).
        trace_id, span_id, _, flags, state, valid = span.get_span_context()
        if not valid:
            return
        traceparent = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
        if setter is default_setter:
            carrier[TRACEPARENT] = traceparent  # type: ignore[index]
        else:
            setter.set(carrier, TRACEPARENT, traceparent)
        if state is not DEFAULT_TRACE_STATE and state:
            setter.set(carrier, TRACESTATE, state.to_header())
