"""Per-request context the adapters share: the gateway handle, request ids and trace headers."""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from adapters import logs
from dataplane.gateway import Gateway

GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID_HEADERS = web.AppKey("request_id_headers", tuple)
REQUEST_ID = web.RequestKey("request_id", str)  # the id this request answers with
# How a stream that began ended other than cleanly: "stream_error" or "client_closed_request" (metrics).
STREAM_OUTCOME = web.RequestKey("stream_outcome", str)
_ALPHABET = string.ascii_letters + string.digits
_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    trace: Mapping[str, str]
    headers: dict[str, str]
    routing_key: str | None = None  # X-SMG-Routing-Key: sticky routing
    target_worker: str | None = None  # X-SMG-Target-Worker: a worker index


def new_request_id(prefix: str) -> str:
    return prefix + "".join(random.choices(_ALPHABET, k=24))


def incoming_request_id(request: web.Request) -> str | None:
    """The client's request id: the first configured header present."""
    return next((v for h in request.app[REQUEST_ID_HEADERS] if (v := request.headers.get(h))), None)


def request_context(request: web.Request, *, prefix: str) -> RequestContext:
    """Ids for one request: the client's (echoed as ``x-request-id``) and a unique one for the engine.

    As in SMG, a client id becomes ``{id}-{suffix}`` on the engine and in the response ``id``: clients reuse
    ids, and two in-flight requests with one engine id would share an ``Abort``.
    """
    incoming = incoming_request_id(request)
    if incoming:
        request_id = f"{incoming}-{new_request_id('')[:12]}"
        echoed = incoming
    else:
        request_id = echoed = new_request_id(prefix)
    request[REQUEST_ID] = echoed
    logs.REQUEST_ID.set(echoed)  # on every line logged for this request, in the tasks it spawns too
    headers = request.headers
    trace = {h: v for h in _TRACE_HEADERS if (v := headers.get(h))}
    return RequestContext(
        request_id,
        trace,
        {"x-request-id": echoed},
        headers.get("x-smg-routing-key") or None,
        headers.get("x-smg-target-worker") or None,
    )
