"""The reference worker's own spans: one ``refworker.generate`` (SERVER) per request, in the caller's trace.

Started with ``--otlp-traces-endpoint``, the worker extracts W3C trace context from each request's gRPC
metadata (or HTTP headers, in HTTP mode) and exports its spans over OTLP/gRPC, as an engine would. Its SDK
setup is its own: the worker is the other side of the wire and shares no code with the gateway. Sampling
is parent-based, so a request the gateway did not sample (flag 0) gets no worker span either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SPAN_NAME = "refworker.generate"
DEFAULT_SERVICE_NAME = "refworker"
_PROPAGATOR = TraceContextTextMapPropagator()


class _State:
    tracer: Tracer | None = None
    provider: TracerProvider | None = None


def configure(endpoint: str, service_name: str = DEFAULT_SERVICE_NAME) -> None:
    """Export this process's spans to the OTLP/gRPC ``endpoint`` (``host:port`` means ``http://host:port``)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}), sampler=ParentBased(ALWAYS_ON)
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=url, insecure=url.startswith("http://")))
    )
    _State.provider = provider
    _State.tracer = provider.get_tracer("refworker")


def shutdown() -> None:
    """Flush and stop the exporter (at exit; a no-op when tracing is off)."""
    if _State.provider is not None:
        _State.provider.shutdown()
        _State.provider = _State.tracer = None


@contextlib.contextmanager
def request_span(
    carrier: Iterable[tuple[str, str | bytes]] | Mapping[str, str], attributes: Mapping[str, Any]
) -> Iterator[Span | None]:
    """The worker's span of one request whose trace context is in ``carrier`` (gRPC metadata pairs or
    HTTP headers); ``None`` and no cost beyond this call when tracing is off."""
    tracer = _State.tracer
    if tracer is None:
        yield None
        return
    headers = carrier if isinstance(carrier, Mapping) else {k: v for k, v in carrier if isinstance(v, str)}
    parent = _PROPAGATOR.extract(headers)
    span = tracer.start_span(SPAN_NAME, parent, kind=SpanKind.SERVER, attributes=attributes)
    try:
        yield span
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        span.end()
