"""OpenAI-compatible HTTP workers: their health and model probes, and the proxy that forwards requests.

HTTP workers tokenize and detokenize for themselves, so a request for their model skips the data plane's
pipeline and is forwarded as it came (body untouched), streamed back as the worker sends it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from adapters.context import GATEWAY, RequestContext, request_context
from adapters.params import model_name, parse_body
from dataplane.client import WorkerClient
from dataplane.config import WorkerUrl
from dataplane.errors import ConfigError, InternalError, WorkerError
from dataplane.gateway import Gateway, grpc_client_factory
from dataplane.routing import RouteRequest
from dataplane.types import WireRequest, WorkerInfo, WorkerMessage

# Headers a worker should see (auth, correlation, tracing); hop-by-hop and length headers are not copied.
FORWARDED = ("authorization", "content-type", "x-request-id", "x-correlation-id", "traceparent", "tracestate")
RETURNED = ("content-type", "cache-control", "x-request-id")


class HttpWorkerClient:
    """Health and model probes of an HTTP worker; its requests go through ``proxy``."""

    def __init__(self, url: WorkerUrl, session: aiohttp.ClientSession) -> None:
        self.address = url.url.rstrip("/")
        self._session = session

    def generate(self, request: WireRequest) -> AsyncGenerator[WorkerMessage, None]:
        raise InternalError("HTTP workers are proxied, never fed tokenized requests")

    async def abort(self, request_id: str, reason: str) -> bool:
        return False  # closing the proxied connection is what stops an HTTP worker

    async def health(self, timeout: float) -> bool:
        try:
            async with self._session.get(
                f"{self.address}/health", timeout=aiohttp.ClientTimeout(timeout)
            ) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def model_info(self, timeout: float) -> WorkerInfo:
        try:
            async with self._session.get(
                f"{self.address}/v1/models", timeout=aiohttp.ClientTimeout(timeout)
            ) as response:
                response.raise_for_status()
                data = await response.json()
            model = str(data["data"][0]["id"])
        except (aiohttp.ClientError, TimeoutError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise WorkerError(f"worker {self.address} has no usable /v1/models: {exc}", status=503) from exc
        return WorkerInfo(model, "", "", 0, (), "default")

    def post(self, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        """``async with client.post(...) as response`` against the worker."""
        return self._session.post(
            self.address + path, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    def close(self) -> None:
        pass  # the session is shared and closed with the application


class ClientFactory:
    """Builds the client for each worker URL: grpclib for ``grpc://``, aiohttp for ``http(s)://``."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    def __call__(self, url: WorkerUrl) -> WorkerClient:
        if url.mode == "grpc":
            return grpc_client_factory(url)
        if self.session is None:
            raise ConfigError("HTTP workers need the application's client session")
        return HttpWorkerClient(url, self.session)


async def proxy(
    request: web.Request, raw: bytes, body: dict[str, Any], gateway: Gateway, ctx: RequestContext
) -> web.StreamResponse:
    """Forward the request to an HTTP worker of the model and relay its answer, streaming if it streams."""
    route = RouteRequest(gateway.model(model_name(body)).id, text=raw.decode(errors="replace"))
    worker = gateway.select(route)
    timeout = gateway.config.request_timeout_secs
    client = worker.client
    assert isinstance(client, HttpWorkerClient)
    headers = {h: v for h in FORWARDED if (v := request.headers.get(h))} | ctx.headers
    with gateway.registry.lease(worker):
        try:
            async with client.post(request.path, raw, headers, timeout) as upstream:
                return await _relay(request, upstream)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                raise WorkerError(f"worker {client.address} timed out", status=504) from exc
            raise WorkerError(f"worker {client.address} unreachable: {exc}", status=503) from exc


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    headers = {h: v for h in RETURNED if (v := upstream.headers.get(h))}
    if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
        return web.Response(status=upstream.status, body=await upstream.read(), headers=headers)
    response = web.StreamResponse(status=upstream.status, headers=headers)
    await response.prepare(request)
    # A client that leaves ends the relay; leaving ``async with upstream`` closes the worker's connection.
    with contextlib.suppress(ConnectionResetError):
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
    return response


RouteHandler = Callable[[web.Request, RequestContext, dict[str, Any]], Awaitable[web.StreamResponse]]


def openai_route(
    prefix: str,
) -> Callable[[RouteHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Wrap an OpenAI endpoint: request ids, the JSON body, and HTTP-worker models proxied untouched."""

    def wrap(handler: RouteHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def route(request: web.Request) -> web.StreamResponse:
            ctx = request_context(request, prefix=prefix)
            raw = await request.read()
            body = parse_body(raw)
            gateway = request.app[GATEWAY]
            if gateway.model(model_name(body)).proxied:
                return await proxy(request, raw, body, gateway, ctx)
            return await handler(request, ctx, body)

        return route

    return wrap
