"""``POST /v1/chat/completions``."""

from __future__ import annotations

import orjson
from aiohttp import web

from adapters.chat.request import parse_chat
from adapters.chat.response import ChatChunks, chat_completion
from adapters.context import GATEWAY, request_context
from adapters.http_workers import is_proxied, proxy
from adapters.params import parse_body
from adapters.sse import stream_events


async def chat_completions(request: web.Request) -> web.StreamResponse:
    ctx = request_context(request, prefix="chatcmpl-")
    raw = await request.read()
    body = parse_body(raw)
    gateway = request.app[GATEWAY]
    if is_proxied(gateway, body):
        return await proxy(request, raw, body, gateway, ctx)
    chat = parse_chat(body, ctx.request_id, ctx.trace)
    if chat.generate.stream:
        return await stream_events(
            request,
            gateway.generate(chat.generate),
            lambda started: ChatChunks(started, chat.include_usage),
            ctx.headers,
        )
    done = await gateway.collect(chat.generate)
    return web.Response(
        body=orjson.dumps(chat_completion(done)), content_type="application/json", headers=ctx.headers
    )
