"""Per-request context the adapters share: the gateway handle, request ids and trace headers."""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from dataplane.gateway import Gateway

GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID_HEADERS = web.AppKey("request_id_headers", tuple)
_ALPHABET = string.ascii_letters + string.digits
_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    trace: Mapping[str, str]
    headers: dict[str, str]


def new_request_id(prefix: str) -> str:
    return prefix + "".join(random.choices(_ALPHABET, k=24))


def request_context(request: web.Request, *, prefix: str) -> RequestContext:
    """The client's request id (first configured header present) or a new one, echoed as ``x-request-id``."""
    incoming = next((v for h in request.app[REQUEST_ID_HEADERS] if (v := request.headers.get(h))), None)
    request_id = incoming or new_request_id(prefix)
    trace = {h: v for h in _TRACE_HEADERS if (v := request.headers.get(h))}
    return RequestContext(request_id, trace, {"x-request-id": request_id})
