"""OpenAI-compatible HTTP workers: their health, model and load probes, and the proxy that forwards requests.

HTTP workers tokenize and detokenize for themselves, so a request for their model skips the data plane's
pipeline and is forwarded as it came (body untouched), streamed back as the worker sends it. The worker
is chosen by the same policy as for gRPC workers, on the request's text; until the worker's status line
arrives nothing has reached the client, so a retryable status or a refused connection is retried on
another worker and counts on the worker's circuit breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from opentelemetry.trace import Status, StatusCode

from adapters.context import GATEWAY, RequestContext, request_context
from adapters.params import model_name, parse_body
from dataplane.client import WorkerClient
from dataplane.config import WorkerSpec
from dataplane.errors import (
    ConfigError,
    GatewayError,
    InternalError,
    InvalidRequest,
    NoHealthyWorker,
    WorkerError,
)
from dataplane.gateway import Gateway, grpc_client_factory
from dataplane.metrics import RequestMeter
from dataplane.retry import RETRYABLE_STATUSES
from dataplane.routing import RouteRequest
from dataplane.telemetry import error_status, proxy_attempt
from dataplane.types import EngineLoad, KvEventBatch, WireRequest, WorkerInfo, WorkerMessage
from dataplane.workers import Worker

log = logging.getLogger(__name__)
# Headers a worker should see (auth, correlation, tracing, sticky routing); hop-by-hop and length headers
# are not copied.
FORWARDED = (
    "authorization",
    "content-type",
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
    "x-smg-routing-key",
)
RETURNED = ("content-type", "cache-control", "x-request-id")


class HttpWorkerClient:
    """Health, model and load probes of an HTTP worker; its requests go through ``proxy``."""

    runtime = "http"

    def __init__(
        self, spec: WorkerSpec, session: aiohttp.ClientSession, health_path: str = "/health"
    ) -> None:
        self.address = spec.url.url.rstrip("/")
        self._health_url = self.address + health_path
        self._session = session
        self._auth = {"authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}

    def generate(self, request: WireRequest) -> AsyncGenerator[WorkerMessage, None]:
        raise InternalError("HTTP workers are proxied, never fed tokenized requests")

    async def abort(self, request_id: str, reason: str) -> bool:
        return False  # closing the proxied connection is what stops an HTTP worker

    async def health(self, timeout: float) -> bool:
        try:
            async with self._session.get(
                self._health_url, headers=self._auth, timeout=aiohttp.ClientTimeout(timeout)
            ) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def model_info(self, timeout: float) -> WorkerInfo:
        try:
            async with self._session.get(
                f"{self.address}/v1/models", headers=self._auth, timeout=aiohttp.ClientTimeout(timeout)
            ) as response:
                response.raise_for_status()
                data = await response.json()
            model = str(data["data"][0]["id"])
        except (aiohttp.ClientError, TimeoutError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise WorkerError(f"worker {self.address} has no usable /v1/models: {exc}", status=503) from exc
        return WorkerInfo(model, "", "", 0, (), "default")

    async def get_loads(self, timeout: float) -> EngineLoad | None:
        """``GET /v1/loads`` (GetLoads' JSON shape); ``None`` when the worker has no such endpoint."""
        try:
            async with self._session.get(
                f"{self.address}/v1/loads", headers=self._auth, timeout=aiohttp.ClientTimeout(timeout)
            ) as response:
                if response.status in (404, 405, 501):
                    return None
                response.raise_for_status()
                data = await response.json()
            return _summed_loads(data["loads"])
        except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError) as exc:
            raise WorkerError(f"worker {self.address}: no usable /v1/loads: {exc}", status=503) from exc

    async def flush_cache(self, timeout: float) -> None:
        """SGLang's ``POST /flush_cache`` (a worker without it answers 404: not flushed)."""
        try:
            async with self._session.post(
                f"{self.address}/flush_cache", headers=self._auth, timeout=aiohttp.ClientTimeout(timeout)
            ) as response:
                if response.status != 200:
                    reason = (await response.text()).strip()[:200]
                    raise WorkerError(
                        f"worker {self.address} did not flush: HTTP {response.status} {reason}".rstrip(),
                        status=409 if response.status == 400 else 502,
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WorkerError(f"worker {self.address} unreachable: {exc}", status=503) from exc

    async def kv_events(self, start_sequence_number: int) -> AsyncGenerator[KvEventBatch, None]:
        none: tuple[KvEventBatch, ...] = ()  # HTTP workers publish no KV events
        for batch in none:
            yield batch
        raise WorkerError(f"worker {self.address} (HTTP) publishes no KV events", status=501)

    async def post(self, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        """The worker's response to ``POST path`` (release it, e.g. with ``async with``)."""
        return await self._session.post(
            self.address + path,
            data=body,
            headers=headers | self._auth,
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    def close(self) -> None:
        pass  # the session is shared and closed with the application


def _summed_loads(ranks: list[Mapping[str, Any]]) -> EngineLoad:
    def total(key: str) -> Any:
        return sum(rank.get(key) or 0 for rank in ranks)

    return EngineLoad(
        running_requests=int(total("num_running_reqs")),
        waiting_requests=int(total("num_waiting_reqs")),
        token_usage=float(total("token_usage")) / max(len(ranks), 1),
        gen_throughput=float(total("gen_throughput")),
        waiting_uncached_tokens=int(total("num_waiting_uncached_tokens")),
        received_at=time.monotonic(),
    )


class ClientFactory:
    """Builds the client for each worker: grpclib for ``grpc://``, aiohttp for ``http(s)://``."""

    def __init__(self, health_path: str = "/health") -> None:
        self.session: aiohttp.ClientSession | None = None
        self._health_path = health_path

    def __call__(self, spec: WorkerSpec) -> WorkerClient:
        if spec.url.mode == "grpc":
            return grpc_client_factory(spec)
        if self.session is None:
            raise ConfigError("HTTP workers need the application's client session")
        return HttpWorkerClient(spec, self.session, self._health_path)


def routing_text(body: Mapping[str, Any]) -> str:
    """The text a policy routes an HTTP worker's request on: every message (role and text parts) of a
    chat, or the prompt(s) of a completion; a longer conversation extends its shorter prefix."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return "".join(
            f"{m.get('role', '')}\n{_content(m.get('content'))}\n" for m in messages if isinstance(m, dict)
        )
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return "\n".join(
            p if isinstance(p, str) else " ".join(map(str, p)) if isinstance(p, list) else str(p)
            for p in prompt
        )
    return prompt if isinstance(prompt, str) else ""


def _content(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


# The router metrics' ``endpoint`` of a forwarded request, by path.
_ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/responses": "responses"}


async def proxy(
    request: web.Request, raw: bytes, body: dict[str, Any], gateway: Gateway, ctx: RequestContext
) -> web.StreamResponse:
    """Forward the request to an HTTP worker of the model and relay its answer, streaming if it streams;
    counted in the router metrics as ``router_type="http"`` (no token counts: the worker's output is
    relayed as it is, not parsed)."""
    route = RouteRequest(
        gateway.model(model_name(body)).id,
        text=routing_text(body),
        routing_key=ctx.routing_key,
        target_worker=ctx.target_worker,
    )
    endpoint = _ENDPOINTS.get(request.path, request.path.rsplit("/", 1)[-1])
    meter = gateway.metrics.request(route.model_id, endpoint, body.get("stream") is True, router_type="http")
    try:
        if gateway.config.pd_disaggregation:
            response = await _forward_pd(request, body, gateway, ctx, route, meter)
        else:
            response = await _forward(request, raw, gateway, ctx, route, meter)
    except GatewayError as exc:
        _outcome(meter, exc)
        raise
    _outcome(meter, _relayed_failure(response.status))
    return response


def _relayed_failure(status: int) -> GatewayError | None:
    """What a worker's own answer with ``status``, relayed to the client, counts as."""
    if status < 400:
        return None
    if status >= 500 or status in RETRYABLE_STATUSES:
        return WorkerError(f"worker answered {status}", status=status)
    return InvalidRequest(f"worker answered {status}")


def _outcome(meter: RequestMeter, failure: GatewayError | None) -> None:
    if failure is None:
        meter.succeeded(())
        return
    meter.failed(failure)
    if isinstance(failure, WorkerError) and failure.status in RETRYABLE_STATUSES:
        meter.exhausted()


async def _forward(
    request: web.Request,
    raw: bytes,
    gateway: Gateway,
    ctx: RequestContext,
    route: RouteRequest,
    meter: RequestMeter,
) -> web.StreamResponse:
    headers = {h: v for h in FORWARDED if (v := request.headers.get(h))} | ctx.headers
    retry = gateway.retry
    tried: list[Worker] = []
    failure: WorkerError | None = None
    for attempt in range(retry.max_attempts):
        if attempt:
            log.warning("retrying %s after: %s", request.path, failure)
            backoff = retry.backoff(attempt - 1)
            meter.retried(attempt - 1, backoff)
            await asyncio.sleep(backoff)
        try:
            worker = gateway.select(route, tried)
        except NoHealthyWorker:
            if failure is None:
                raise
            raise failure from None
        tried.append(worker)
        meter.selected(worker)
        # The worker joins the gateway's trace below this attempt's span (with tracing off: the client's).
        traced = proxy_attempt(
            gateway.tracer, route.model_id, worker.url.host, worker.url.port, attempt, headers
        )
        with gateway.registry.lease(worker), traced as (sent, span):
            upstream, failure = await _send(worker, request.path, raw, dict(sent), gateway)
            if upstream is None:
                assert failure is not None
                meter.worker_failed(worker, failure)
                if not retry.should_retry(failure.status, attempt):
                    raise failure
                if span is not None:
                    error_status(span, failure)
                continue
            async with upstream:
                if span is not None:
                    span.set_attribute("http.response.status_code", upstream.status)
                    if upstream.status >= 500:
                        span.set_status(Status(StatusCode.ERROR, f"HTTP {upstream.status}"))
                if retry.should_retry(upstream.status, attempt):
                    failure = WorkerError(
                        f"worker {worker.url.url} answered {upstream.status}", status=upstream.status
                    )
                    meter.worker_failed(worker, failure)
                    if span is not None:
                        error_status(span, failure)
                    continue
                if upstream.status >= 500:
                    meter.worker_failed(worker, WorkerError("", status=upstream.status))
                return await _relay(request, upstream)
    raise InternalError("retry loop ended without an answer")  # max_attempts >= 1 returns or raises above


async def _forward_pd(
    request: web.Request,
    body: dict[str, Any],
    gateway: Gateway,
    ctx: RequestContext,
    route: RouteRequest,
    meter: RequestMeter,
) -> web.StreamResponse:
    """SGLang's PD over HTTP workers, as SMG forwards it: the same JSON — plus the prefill worker's
    ``bootstrap_host``, its ``bootstrap_port`` (null when not given: the engine's default) and a random
    63-bit ``bootstrap_room`` — goes to a prefill and a decode worker at once; the decode worker's answer is
    relayed, the prefill one's read and dropped. Not retried (as the gRPC PD path)."""
    prefill = gateway.select_role(route, "prefill")
    decode = gateway.select_role(route, "decode")
    meter.selected(decode)
    room = {"bootstrap_host": prefill.url.host, "bootstrap_port": prefill.bootstrap_port}
    raw = orjson.dumps(body | room | {"bootstrap_room": secrets.randbits(63)})
    headers = {h: v for h in FORWARDED if (v := request.headers.get(h))} | ctx.headers
    prefill_leg = gateway.spawn(_prefill_leg(prefill, request.path, raw, headers, gateway))
    with gateway.registry.lease(decode):
        try:
            upstream, failure = await _send(decode, request.path, raw, headers, gateway)
            if upstream is None:
                assert failure is not None
                meter.worker_failed(decode, failure)
                raise failure
            async with upstream:
                if upstream.status >= 500:
                    meter.worker_failed(decode, WorkerError("", status=upstream.status))
                return await _relay(request, upstream)
        except BaseException:
            prefill_leg.cancel()  # the request is over: so is its prefill
            raise


async def _prefill_leg(
    worker: Worker, path: str, raw: bytes, headers: dict[str, str], gateway: Gateway
) -> None:
    with gateway.registry.lease(worker):
        upstream, failure = await _send(worker, path, raw, headers, gateway)
        if upstream is None:
            log.warning("prefill leg on %s failed: %s", worker.url.url, failure)
            return
        async with upstream:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await upstream.read()


async def _send(
    worker: Worker, path: str, raw: bytes, headers: dict[str, str], gateway: Gateway
) -> tuple[aiohttp.ClientResponse | None, WorkerError | None]:
    """One attempt, up to the worker's status line, recorded on its breaker: (response, None) or
    (None, error)."""
    client = worker.client
    assert isinstance(client, HttpWorkerClient)
    try:
        upstream: aiohttp.ClientResponse = await client.post(
            path, raw, headers, gateway.config.request_timeout_secs
        )
    except TimeoutError:
        error = WorkerError(f"worker {client.address} timed out", status=504)
    except aiohttp.ClientConnectionError as exc:
        error = WorkerError(f"worker {client.address} unreachable: {exc}", status=503)
    else:
        gateway.registry.record_outcome(worker, upstream.status)
        return upstream, None
    gateway.registry.record_outcome(worker, error.status)
    return None, error


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    headers = {h: v for h in RETURNED if (v := upstream.headers.get(h))}
    if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
        try:
            body = await upstream.read()
        except TimeoutError as exc:
            raise WorkerError(f"worker {upstream.url.origin()} timed out", status=504) from exc
        except aiohttp.ClientError as exc:
            raise WorkerError(f"worker {upstream.url.origin()} broke off: {exc}", status=502) from exc
        return web.Response(status=upstream.status, body=body, headers=headers)
    response = web.StreamResponse(status=upstream.status, headers=headers)
    await response.prepare(request)
    # A client that leaves ends the relay; leaving ``async with upstream`` closes the worker's connection.
    with contextlib.suppress(ConnectionResetError):
        try:
            async for data in upstream.content.iter_any():
                await response.write(data)
        except (aiohttp.ClientError, TimeoutError) as exc:  # mid-stream: the client sees the stream end
            log.warning("worker stream to %s broke off: %s", request.path, exc)
            return response
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
