"""``POST /v1/completions``."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson
from aiohttp import web

from adapters.completions.request import CompletionRequest, parse_completion
from adapters.completions.response import CompletionChunks, text_completion
from adapters.context import GATEWAY, RequestContext
from adapters.http_workers import openai_route
from adapters.sse import stream_events
from dataplane.batch import merge_batch
from dataplane.gateway import Gateway
from dataplane.types import Event


@openai_route("cmpl-")
async def completions(request: web.Request, ctx: RequestContext, body: dict[str, Any]) -> web.StreamResponse:
    parsed = parse_completion(
        body, ctx.request_id, ctx.trace, routing_key=ctx.routing_key, target_worker=ctx.target_worker
    )
    gateway = request.app[GATEWAY]
    echo = _echo_texts(gateway, parsed)
    if parsed.prompts[0].stream:
        return await stream_events(
            request,
            _events(gateway, parsed),
            lambda started: CompletionChunks(started, parsed.include_usage, echo),
            ctx.headers,
        )
    done = await gateway.collect_stream(
        _events(gateway, parsed), n=parsed.prompts[0].sampling.n * len(parsed.prompts)
    )
    return web.Response(
        body=orjson.dumps(text_completion(done, echo)), content_type="application/json", headers=ctx.headers
    )


def _events(gateway: Gateway, parsed: CompletionRequest) -> AsyncGenerator[Event, None]:
    streams = [gateway.generate(p) for p in parsed.prompts]
    if len(streams) == 1:
        return streams[0]
    return merge_batch(streams, parsed.prompts[0].sampling.n)


def _echo_texts(gateway: Gateway, parsed: CompletionRequest) -> list[str]:
    """The prompt text of every choice, when the client asked for echo."""
    if not parsed.echo:
        return []
    n = parsed.prompts[0].sampling.n
    tok = gateway.tokenizer(parsed.prompts[0].model)
    texts = [
        t if t is not None else tok.decode(p.prompt_ids or (), skip_special_tokens=False)
        for t, p in zip(parsed.prompt_texts, parsed.prompts, strict=True)
    ]
    return [text for text in texts for _ in range(n)]
