"""``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from adapters.chat.request import parse_chat
from adapters.chat.response import ChatChunks, chat_completion
from adapters.context import GATEWAY, RequestContext
from adapters.http_workers import openai_route
from adapters.sse import stream_events


@openai_route("chatcmpl-")
async def chat_completions(
    request: web.Request, ctx: RequestContext, body: dict[str, Any]
) -> web.StreamResponse:
    chat = parse_chat(
        body, ctx.request_id, ctx.trace, routing_key=ctx.routing_key, target_worker=ctx.target_worker
    )
    gateway = request.app[GATEWAY]
    if chat.generate.stream:
        return await stream_events(
            request,
            gateway.generate(chat.generate),
            lambda started: ChatChunks(started, chat.include_usage, chat.stream_reasoning),
            ctx.headers,
        )
    done = await gateway.collect(chat.generate)
    return web.Response(
        body=orjson.dumps(chat_completion(done)), content_type="application/json", headers=ctx.headers
    )
