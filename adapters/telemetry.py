"""The OpenTelemetry SDK of the gateway process. Only the entrypoint configures it (ARCHITECTURE.md); the
data plane uses the API (``dataplane/telemetry.py``) and reaches what is installed here.

``installed(config.tracing)`` sets the global tracer provider — resource ``service.name=smg`` (or
``$OTEL_SERVICE_NAME``), parent-based ratio sampling, a batch processor (``adapters/span_batcher.py``) in
front of the SDK's OTLP exporter over gRPC or HTTP/protobuf, each writing its requests with
``adapters/otlp_encoder.py``; the spans themselves are ``adapters/tracer.py``'s, measured several times
cheaper than the SDK's — and the W3C TraceContext propagator (``adapters/trace_context.py``); on exit it
flushes and shuts the provider down. Unlike SMG 1.13, nothing here depends on the log level.

Endpoint, protocol and ratio come from the flags, else from the standard variables
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``/``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``/``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_TRACES_SAMPLER_ARG``),
else SMG's default ``localhost:4317`` over gRPC, every trace sampled. The exporters read their other
variables themselves (headers, timeout, compression, certificates), and the batch processor the
``OTEL_BSP_*`` ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace.export import SpanExporter

from adapters.span_batcher import SpanBatcher
from adapters.trace_context import TraceContextPropagator
from adapters.tracer import LeanTracerProvider
from dataplane.config import TRACE_PROTOCOLS, TraceProtocol, TracingConfig
from dataplane.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "smg"
DEFAULT_PORTS: Mapping[TraceProtocol, int] = {"grpc": 4317, "http/protobuf": 4318}
TRACES_PATH = "/v1/traces"
# Fewer, larger exports than the SDK's 512-span batches: each export takes the GIL from the event loop.
# On bench/tracing.py's non-streamed workload sampling cost 7-12 % of throughput over OTLP/gRPC with
# 2048-span batches and 11.7 % with 512 (2026-11-28): no clear difference, so the fewer exports.
# ``OTEL_BSP_MAX_QUEUE_SIZE``/``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` still win.
EXPORT_BATCH_SIZE = 2048
QUEUE_SIZE = 4 * EXPORT_BATCH_SIZE


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """Where and how spans go, every choice resolved."""

    endpoint: str  # a URL: http(s)://host:port for gRPC, the traces URL itself for HTTP
    protocol: TraceProtocol
    sampling_ratio: float


def export_settings(config: TracingConfig, environ: Mapping[str, str]) -> ExportSettings:
    """Resolve the flags over the ``OTEL_*`` variables over the defaults; raise ``ConfigError`` on a value
    that cannot work."""
    raw_protocol = (
        config.protocol
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    if raw_protocol not in TRACE_PROTOCOLS:
        raise ConfigError(
            f"OTLP protocol {raw_protocol!r} is not supported; one of {', '.join(TRACE_PROTOCOLS)}"
        )
    protocol: TraceProtocol = raw_protocol
    http = protocol == "http/protobuf"
    if config.endpoint:
        endpoint = _with_scheme(config.endpoint)
        if http and urlsplit(endpoint).path in ("", "/"):
            endpoint = endpoint.rstrip("/") + TRACES_PATH
    elif signal := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        endpoint = _with_scheme(signal)  # the traces URL as given (the specification's rule)
    elif generic := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = _with_scheme(generic)
        if http:
            endpoint = endpoint.rstrip("/") + TRACES_PATH
    else:
        endpoint = f"http://localhost:{DEFAULT_PORTS[protocol]}" + (TRACES_PATH if http else "")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"OTLP traces endpoint {endpoint!r}: expected http(s)://host:port")
    return ExportSettings(endpoint, protocol, _ratio(config, environ))


def _with_scheme(endpoint: str) -> str:
    """As SMG: ``host:port`` means ``http://host:port``."""
    endpoint = endpoint.strip()
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def _ratio(config: TracingConfig, environ: Mapping[str, str]) -> float:
    if config.sampling_ratio is not None:
        return config.sampling_ratio
    raw = environ.get("OTEL_TRACES_SAMPLER_ARG")
    if not raw:
        return 1.0
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0 <= ratio <= 1:
        raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={raw!r}: expected a ratio between 0 and 1")
    return ratio


def exporter(settings: ExportSettings) -> SpanExporter:
    """The OTLP span exporter for ``settings`` (gRPC insecure unless the endpoint says https)."""
    if settings.protocol == "grpc":
        from adapters.otlp_encoder import GrpcSpanExporter

        return GrpcSpanExporter(endpoint=settings.endpoint, insecure=settings.endpoint.startswith("http://"))
    from adapters.otlp_encoder import HttpSpanExporter

    return HttpSpanExporter(endpoint=settings.endpoint)


def tracer_provider(
    settings: ExportSettings, environ: Mapping[str, str], span_exporter: SpanExporter | None = None
) -> LeanTracerProvider:
    """A provider exporting through a batch processor (``span_exporter``: instead of the OTLP one)."""
    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME})
    ours = not {"OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"} & environ.keys()
    processor = SpanBatcher(
        span_exporter or exporter(settings),
        max_queue_size=QUEUE_SIZE if ours else None,  # None: from the variables
        max_export_batch_size=EXPORT_BATCH_SIZE if ours else None,
        environ=environ,
    )
    return LeanTracerProvider(resource, settings.sampling_ratio, processor)


@contextlib.contextmanager
def installed(config: TracingConfig, environ: Mapping[str, str] = os.environ) -> Iterator[None]:
    """Tracing configured for as long as the command runs (nothing when ``--enable-trace`` is off); the
    provider is flushed and shut down on the way out, so the last spans are not lost."""
    if not config.enabled:
        yield
        return
    settings = export_settings(config, environ)
    provider = tracer_provider(settings, environ)
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(TraceContextPropagator())
    log.info(
        "tracing: OTLP %s to %s, sampling ratio %g",
        settings.protocol,
        settings.endpoint,
        settings.sampling_ratio,
    )
    try:
        yield
    finally:
        provider.shutdown()
