"""Server-sent events as OpenAI streams them: ``data: {json}\\n\\n`` … ``data: [DONE]\\n\\n``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from adapters.errors import stream_error_event
from dataplane.errors import GatewayError, InternalError
from dataplane.types import Event, Started

DONE = b"data: [DONE]\n\n"


class ClientGone(Exception):
    """The client closed the connection; the caller tears the upstream request down."""


class SseWriter:
    def __init__(self, request: web.Request, headers: dict[str, str]) -> None:
        self._request = request
        self._response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                **headers,
            },
        )

    async def open(self) -> web.StreamResponse:
        await self._response.prepare(self._request)
        return self._response

    async def send(self, payload: dict[str, Any]) -> None:
        await self.write(b"data: " + orjson.dumps(payload) + b"\n\n")

    async def write(self, data: bytes) -> None:
        try:
            await self._response.write(data)
        except (ConnectionResetError, ConnectionError) as exc:
            raise ClientGone from exc

    async def close(self) -> None:
        await self.write(DONE)
        await self._response.write_eof()

    @property
    def response(self) -> web.StreamResponse:
        return self._response


class Formatter(Protocol):
    def on_event(self, event: Event) -> list[dict[str, Any]]: ...


async def stream_events(
    request: web.Request,
    events: AsyncGenerator[Event, None],
    make_formatter: Callable[[Started], Formatter],
    headers: dict[str, str],
) -> web.StreamResponse:
    """Send an event stream as SSE.

    Errors before the worker's first message propagate (the client gets a JSON error with a status);
    after that they go in-band and the stream still ends with ``[DONE]``. A client that goes away closes
    the event stream, which aborts the worker request.
    """
    async with contextlib.aclosing(events):
        started = await anext(events)
        if not isinstance(started, Started):
            raise InternalError("event stream did not begin with Started")
        formatter = make_formatter(started)
        writer = SseWriter(request, headers)
        await writer.open()
        try:
            async for event in events:
                for payload in formatter.on_event(event):
                    await writer.send(payload)
        except GatewayError as exc:
            await _try_write(writer, stream_error_event(exc))
        except ClientGone:
            return writer.response
        with contextlib.suppress(ClientGone):
            await writer.close()
        return writer.response


async def _try_write(writer: SseWriter, data: bytes) -> None:
    with contextlib.suppress(ClientGone):
        await writer.write(data)
