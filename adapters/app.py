"""The aiohttp application: routes, middlewares and the gateway's lifecycle."""

from __future__ import annotations

import asyncio
import gc
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
from adapters.conversations import routes as conversations
from adapters.errors import error_response, gateway_error_response, http_error_response
from adapters.grpc.server import grpc_lifecycle
from adapters.http_workers import ClientFactory
from adapters.logs import ACCESS_LOGGER, AccessLogger
from adapters.metrics import ConnectionCollector, HttpMetrics, listener_host, start_listener
from adapters.responses import routes as responses
from adapters.responses.history import HISTORY, history_lifecycle
from adapters.tokenize import routes as tokenize
from adapters.tracing import tracing_middleware
from dataplane.config import GatewayConfig
from dataplane.errors import GatewayError
from dataplane.gateway import Gateway
from dataplane.history import make_history
from dataplane.history.metered import MeteredHistory

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
    factory = ClientFactory(config.health_check_endpoint)
    app[CLIENT_FACTORY] = factory
    app[GATEWAY] = gateway = Gateway(config, factory)
    http_metrics = HttpMetrics(gateway.metrics.registry, config.prometheus_duration_buckets)
    app.middlewares.insert(0, http_metrics.middleware())  # outside the error table: counts what it answers
    if gateway.tracer is not None:
        app.middlewares.insert(0, tracing_middleware(gateway.tracer))  # outermost: sees the final status
    app[REQUEST_ID_HEADERS] = tuple(h.lower() for h in config.request_id_headers)
    buckets = config.prometheus_duration_buckets
    app[HISTORY] = MeteredHistory(make_history(config), gateway.metrics.registry, buckets)
    app.cleanup_ctx.append(history_lifecycle)  # started first, closed last
    app.cleanup_ctx.append(_gateway_lifecycle)
    if config.grpc_port is not None:
        app.cleanup_ctx.append(grpc_lifecycle(config.host, config.grpc_port))
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/responses", responses.create_response)
    app.router.add_get("/v1/responses/{response_id}", responses.get_response)
    app.router.add_delete("/v1/responses/{response_id}", responses.delete_response)
    app.router.add_get("/v1/responses/{response_id}/input_items", responses.list_input_items)
    app.router.add_post("/v1/responses/{response_id}/cancel", responses.cancel_response)
    app.router.add_post("/v1/conversations", conversations.create_conversation)
    app.router.add_get("/v1/conversations/{conversation_id}", conversations.get_conversation)
    app.router.add_post("/v1/conversations/{conversation_id}", conversations.update_conversation)
    app.router.add_delete("/v1/conversations/{conversation_id}", conversations.delete_conversation)
    app.router.add_get("/v1/conversations/{conversation_id}/items", conversations.list_items)
    app.router.add_post("/v1/conversations/{conversation_id}/items", conversations.add_items)
    app.router.add_get("/v1/conversations/{conversation_id}/items/{item_id}", conversations.get_item)
    app.router.add_delete("/v1/conversations/{conversation_id}/items/{item_id}", conversations.delete_item)
    app.router.add_get("/v1/models", admin.models)
    app.router.add_post("/v1/tokenize", tokenize.tokenize_route)
    app.router.add_post("/v1/detokenize", tokenize.detokenize_route)
    app.router.add_get("/v1/tokenizers", tokenize.list_tokenizers)
    app.router.add_post("/v1/tokenizers", tokenize.add_tokenizer)
    app.router.add_get("/v1/tokenizers/{name:.+}/status", tokenize.tokenizer_status)
    app.router.add_get("/v1/tokenizers/{name:.+}", tokenize.get_tokenizer)
    app.router.add_delete("/v1/tokenizers/{name:.+}", tokenize.remove_tokenizer)
    app.router.add_get("/health", admin.liveness)
    app.router.add_get("/liveness", admin.liveness)
    app.router.add_get("/readiness", admin.readiness)
    app.router.add_get("/workers", admin.workers)
    app.router.add_post("/workers", admin.add_worker)
    app.router.add_get("/workers/{worker_id}", admin.get_worker)
    app.router.add_post("/flush_cache", admin.flush_cache)
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


# Allocations between young-generation collections (CPython's default: 700). Objects that live for a while
# but not for ever — a request's, and above all sampled spans waiting in the export queue for a batch —
# were otherwise walked by a collection every few hundred allocations and promoted through the older
# generations; with the heap frozen those are small, so full collections came often too. Paired runs
# (bench/compare.py, shape (a), 2026-11-27): traced 0.722 vs 0.786 ms gateway CPU per request (5 of 5
# pairs), untraced 0.639 vs 0.651; shape (b) 1.525 vs 1.597 ms (3 of 3).
YOUNG_GENERATION_THRESHOLD = 10_000


async def _tune_garbage_collector(gateway: Gateway) -> None:
    """Once the first worker is ready (its tokenizer and template loaded), move everything allocated so far
    out of the garbage collector's reach — full collections then walk only what requests allocate, not the
    libraries' and tokenizers' long-lived objects (bench/compare.py (b), paired runs: ~5 % less gateway
    CPU per request) — and collect the young generation less often (``YOUNG_GENERATION_THRESHOLD``)."""
    await gateway.first_ready.wait()
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)


async def serve(config: GatewayConfig, stop: asyncio.Event) -> None:
    """Run the gateway on ``config.host:config.port`` until ``stop`` is set, then shut down gracefully."""
    # handler_cancellation: a client that disconnects cancels its handler, which aborts the worker request
    # even while the worker is silent (a write would only notice at the next token).
    app = build_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        access_log=logging.getLogger(ACCESS_LOGGER),  # one line per request at info (adapters/logs.py)
        access_log_class=AccessLogger,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_port=True)
        await site.start()
        log.info("gateway listening on http://%s:%d", config.host, config.port)
        app[GATEWAY].spawn(_tune_garbage_collector(app[GATEWAY]))
        registry = app[GATEWAY].metrics.registry
        registry.register(ConnectionCollector(lambda: len(runner.server.connections) if runner.server else 0))
        host = listener_host(config.prometheus_host, config.host)
        metrics = await start_listener(registry, host, config.prometheus_port)
        try:
            await stop.wait()
        finally:
            await metrics.cleanup()
    finally:
        await runner.cleanup()
