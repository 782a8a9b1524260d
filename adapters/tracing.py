"""The SERVER span of each HTTP request: an aiohttp middleware, installed only while tracing is on.

The span continues the caller's W3C ``traceparent``/``tracestate`` and is the current span while the
handler runs, so the data plane's stage spans and the context sent to workers hang below it. It wraps the
error middleware: the status it records is the one the client gets. Health probes are not traced.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from adapters.context import REQUEST_ID
from dataplane.telemetry import CANCELLED, error_status
from dataplane.telemetry import REQUEST_ID as REQUEST_ID_ATTRIBUTE

UNTRACED_PATHS = frozenset({"/health", "/liveness", "/readiness"})


def tracing_middleware(tracer: Tracer) -> Middleware:
    @web.middleware
    async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNTRACED_PATHS:
            return await handler(request)
        parent = propagate.extract(request.headers)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        attributes: dict[str, Any] = {"http.request.method": request.method, "url.path": request.path}
        if route:
            attributes["http.route"] = route
        name = f"{request.method} {route}" if route else request.method
        span = tracer.start_span(name, parent, kind=SpanKind.SERVER, attributes=attributes)
        recording = span.is_recording()
        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            response = await handler(request)
        except asyncio.CancelledError:  # the client went away (handler cancellation)
            span.set_attribute(CANCELLED, True)
            raise
        except BaseException as exc:
            error_status(span, exc)
            raise
        else:
            if recording:
                span.set_attribute("http.response.status_code", response.status)
                if request_id := request.get(REQUEST_ID):
                    span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
                if response.status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status}"))
            return response
        finally:
            context.detach(token)
            span.end()

    return trace_request
