"""One table from gateway errors to HTTP statuses and OpenAI-style error bodies."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from dataplane.errors import GatewayError

ERROR_CODE_HEADER = "X-SMG-Error-Code"
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "code", "param"}}`` as OpenAI sends it."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def error_response(status: int, message: str, code: str, param: str | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(error_body(status, message, code, param)),
        content_type="application/json",
        headers={ERROR_CODE_HEADER: code},
    )


def gateway_error_response(exc: GatewayError) -> web.Response:
    return error_response(exc.status, exc.message, exc.code, exc.param)


def http_error_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (404 route, 405 method, 413 body too large) in the same JSON shape."""
    code = HTTPStatus(exc.status).phrase.lower().replace(" ", "_")
    response = error_response(exc.status, exc.text or HTTPStatus(exc.status).phrase, code)
    if "Allow" in exc.headers:  # a 405 names the methods that would work
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def stream_error_event(exc: GatewayError) -> bytes:
    """The in-band SSE error once headers are sent: the stream then ends with ``[DONE]``."""
    body = error_body(exc.status, f"Stream error: {exc.message}", exc.code)
    body["error"]["type"] = "internal_error" if exc.status >= 500 else body["error"]["type"]
    return b"data: " + orjson.dumps(body) + b"\n\n"
