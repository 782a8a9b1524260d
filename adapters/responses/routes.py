"""``/v1/responses``: create (streamed or not), retrieve, delete, input items, cancel."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from adapters.context import GATEWAY, RequestContext
from adapters.http_workers import openai_route
from adapters.responses.history import HISTORY, load_history, persist
from adapters.responses.items import list_page, new_id, page_params
from adapters.responses.request import generate_request, parse_responses, response_object
from adapters.responses.response import ResponseBuilder
from adapters.sse import stream_events
from dataplane.errors import GatewayError, InternalError, InvalidRequest, NotFound
from dataplane.history import StoredResponse
from dataplane.types import Event, Started, Usage


@openai_route("resp_")
async def create_response(
    request: web.Request, ctx: RequestContext, body: dict[str, Any]
) -> web.StreamResponse:
    call = parse_responses(body)
    store = request.app[HISTORY]
    response_id = new_id("resp_")
    history = await load_history(store, call)
    if call.stream and call.store and call.previous_response_id is None and call.conversation_id is None:
        # Reach the store before the stream begins: an outage is a 503, not a failure after the output.
        await store.get_response(response_id)
    generate = generate_request(
        call, history, ctx.request_id, ctx.trace, routing_key=ctx.routing_key, target_worker=ctx.target_worker
    )
    builder = ResponseBuilder(response_object(call, response_id, int(time.time())), streaming=call.stream)
    events = request.app[GATEWAY].generate(generate, endpoint="responses")
    turn = run_turn(events, builder, lambda: persist(store, call, builder.response))
    if call.stream:
        return await stream_events(request, turn, lambda _: _Drain(builder), ctx.headers, named=True)
    async with contextlib.aclosing(turn):
        async for _ in turn:
            pass
    if builder.error is not None:
        raise builder.error
    return _json(builder.response, ctx.headers)


async def run_turn(
    events: AsyncGenerator[Event, None], builder: ResponseBuilder, store: Callable[[], Awaitable[None]]
) -> AsyncGenerator[Event, None]:
    """The gateway's events, each folded into ``builder`` before it passes on. The last one (``Usage``) is
    held back until the turn is stored, so the final stream event leaves only once the response can be
    retrieved. A failure after the start ends the turn as ``failed`` instead of raising."""
    async with contextlib.aclosing(events):
        started = await anext(events)  # a failure before the first event is the client's error status
        if not isinstance(started, Started):
            raise InternalError("event stream did not begin with Started")
        builder.start(started)
        yield started
        last: Event = started
        try:
            async for event in events:
                builder.feed(event)
                if isinstance(event, Usage):
                    last = event
                    continue
                yield event
        except GatewayError as exc:
            builder.fail(exc)
        else:
            builder.finish()
    try:
        await store()
    except GatewayError as exc:
        if builder.error is None:
            builder.fail(exc)
    builder.close()
    yield last


class _Drain:
    """The SSE formatter: whatever stream events the builder produced since the last event."""

    def __init__(self, builder: ResponseBuilder) -> None:
        self._builder = builder

    def on_event(self, event: Event) -> list[dict[str, Any]]:
        return self._builder.drain()


async def get_response(request: web.Request) -> web.Response:
    return _json((await _stored(request)).raw)


async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    if not await request.app[HISTORY].delete_response(response_id):
        raise _not_found(response_id)
    return _json({"id": response_id, "object": "response", "deleted": True})


async def list_input_items(request: web.Request) -> web.Response:
    stored = await _stored(request)
    limit, order, after = page_params(request.query)
    items = stored.input if order == "asc" else stored.input[::-1]
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(items) if item["id"] == after), len(items))
    return _json(list_page(items[start : start + limit], start + limit < len(items)))


async def cancel_response(request: web.Request) -> web.Response:
    """Only background responses can be cancelled, and there is no background mode (as SMG answers)."""
    await _stored(request)
    raise InvalidRequest(
        "Cannot cancel a response that was not created in background mode (background mode is not supported)"
    )


async def _stored(request: web.Request) -> StoredResponse:
    response_id = request.match_info["response_id"]
    stored = await request.app[HISTORY].get_response(response_id)
    if stored is None:
        raise _not_found(response_id)
    return stored


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")


def _json(body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json", headers=headers)
