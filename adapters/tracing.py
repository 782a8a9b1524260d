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
        path = request.path
        if path in UNTRACED_PATHS:
            return await handler(request)
        parent = propagate.extract(request.headers)
        method = request.method
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": path}
        if route:
            attributes["http.route"] = route
        span = tracer.start_span(
            f"{method} {route}" if route else method, parent, SpanKind.SERVER, attributes
        )
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
            status = response.status
            if not span.is_recording():
                return response
            done: dict[str, Any] = {"http.response.status_code": status}
            if request_id := request.get(REQUEST_ID):
                done[REQUEST_ID_ATTRIBUTE] = request_id
            span.set_attributes(done)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            return response
        finally:
            context.detach(token)
            span.end()

    return trace_request
