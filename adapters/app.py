"""The aiohttp application: routes, middlewares and the gateway's lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.admin import parse
from adapters.admin import routes as admin
from adapters.chat.routes import chat_completions
from adapters.completions.routes import completions
from adapters.context import GATEWAY, REQUEST_ID, REQUEST_ID_HEADERS, incoming_request_id
from adapters.errors import error_response, gateway_error_response, http_error_response
from adapters.grpc.server import grpc_lifecycle
from adapters.http_workers import ClientFactory
from adapters.tokenize import routes as tokenize
from dataplane.config import GatewayConfig
from dataplane.errors import GatewayError
from dataplane.gateway import Gateway

log = logging.getLogger(__name__)
CLIENT_FACTORY = web.AppKey("client_factory", ClientFactory)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as OpenAI-style JSON with the right status; nothing escapes as a crash."""
    try:
        return await handler(request)
    except GatewayError as exc:
        if exc.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        response = gateway_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = http_error_response(exc)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal error", "internal_error")
    if request_id := request.get(REQUEST_ID) or incoming_request_id(request):
        response.headers["x-request-id"] = request_id
    return response


def build_app(config: GatewayConfig) -> web.Application:
    app = web.Application(client_max_size=config.max_payload_size, middlewares=[errors_middleware])
    factory = ClientFactory()
    app[CLIENT_FACTORY] = factory
    app[GATEWAY] = Gateway(config, factory)
    app[REQUEST_ID_HEADERS] = tuple(h.lower() for h in config.request_id_headers)
    app.cleanup_ctx.append(_gateway_lifecycle)
    if config.grpc_port is not None:
        app.cleanup_ctx.append(grpc_lifecycle(config.host, config.grpc_port))
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", admin.models)
    app.router.add_post("/v1/tokenize", tokenize.tokenize_route)
    app.router.add_post("/v1/detokenize", tokenize.detokenize_route)
    app.router.add_get("/v1/tokenizers", tokenize.list_tokenizers)
    app.router.add_get("/v1/tokenizers/{name:.+}", tokenize.get_tokenizer)
    app.router.add_get("/health", admin.liveness)
    app.router.add_get("/liveness", admin.liveness)
    app.router.add_get("/readiness", admin.readiness)
    app.router.add_get("/workers", admin.workers)
    app.router.add_post("/workers", admin.add_worker)
    app.router.add_get("/workers/{worker_id}", admin.get_worker)
    app.router.add_delete("/workers/{worker_id}", admin.remove_worker)
    app.router.add_post("/parse/function_call", parse.function_call)
    app.router.add_post("/parse/reasoning", parse.reasoning)
    return app


async def _gateway_lifecycle(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        app[CLIENT_FACTORY].session = session
        await gateway.start()
        yield
        await gateway.stop()


async def serve(config: GatewayConfig, stop: asyncio.Event) -> None:
    """Run the gateway on ``config.host:config.port`` until ``stop`` is set, then shut down gracefully."""
    # handler_cancellation: a client that disconnects cancels its handler, which aborts the worker request
    # even while the worker is silent (a write would only notice at the next token).
    runner = web.AppRunner(
        build_app(config), handle_signals=False, handler_cancellation=True, access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_port=True)
    await site.start()
    log.info("gateway listening on http://%s:%d", config.host, config.port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
