"""Server-sent events as OpenAI streams them: ``data: {json}\\n\\n`` … ``data: [DONE]\\n\\n``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from adapters.context import STREAM_OUTCOME
from adapters.errors import stream_error_event
from dataplane.errors import GatewayError, InternalError
from dataplane.types import Event, Started, TextDelta

log = logging.getLogger(__name__)

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
    *,
    named: bool = False,
) -> web.StreamResponse:
    """Send an event stream as SSE; ``named``: each event also gets an ``event:`` line with its payload's
    ``type``, as OpenAI streams the Responses API.

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
        # Events are produced by their own task and written by this one, all that is ready in one write:
        # worker messages that arrive together leave in one send() instead of one each.
        ready: asyncio.Queue[bytes | GatewayError | None] = asyncio.Queue(maxsize=256)  # backpressure
        producer = asyncio.create_task(_produce(events, formatter, ready, named))
        try:
            ended = False
            while not ended:
                items = [await ready.get()]
                while not ready.empty():
                    items.append(ready.get_nowait())
                data = bytearray()
                for item in items:
                    if isinstance(item, bytes):
                        data += item
                    else:  # the end: None, or an error to send in-band
                        if item is not None:
                            data += stream_error_event(item)
                            request[STREAM_OUTCOME] = "stream_error"
                        ended = True
                if data:
                    await writer.write(bytes(data))
            await writer.close()
        except ClientGone:
            request.setdefault(STREAM_OUTCOME, "client_closed_request")  # an error sent before stays it
        finally:
            if not producer.done():  # no await once the stream is complete: a client that closes the
                producer.cancel()  # connection then cannot cancel a handler that answered in full
                await asyncio.gather(producer, return_exceptions=True)
        return writer.response


async def _produce(
    events: AsyncGenerator[Event, None],
    formatter: Formatter,
    ready: asyncio.Queue[bytes | GatewayError | None],
    named: bool,
) -> None:
    end: GatewayError | None = None
    first = True
    try:
        async for event in events:
            for payload in formatter.on_event(event):
                data = b"data: " + orjson.dumps(payload) + b"\n\n"
                if named:
                    data = b"event: " + payload["type"].encode() + b"\n" + data
                if ready.full():  # backpressure: the client reads slower than the worker writes
                    await ready.put(data)
                else:
                    ready.put_nowait(data)  # no coroutine per event on the usual path
            if first and isinstance(event, TextDelta):
                first = False
                await asyncio.sleep(0)  # the first token leaves now, not with whatever arrived behind it
    except GatewayError as exc:
        log.warning("stream failed after it began: %s", exc.message)
        end = exc
    except Exception:
        log.exception("event stream failed")
        end = InternalError("internal error")
    await ready.put(end)
