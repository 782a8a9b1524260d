"""HTTP metrics (SMG's ``smg_http_*``), the middleware that records them and sets the request id for the
logs, and the Prometheus listener: ``GET /metrics`` on ``--prometheus-host:--prometheus-port``.

``path`` is the route's pattern (``/workers/{worker_id}``), ``other`` for a path no route matches, so a
client never creates label values. A response's ``error_code`` is its ``X-SMG-Error-Code``; a stream that
ended with an in-band error counts as ``stream_error``, a client that left first as ``499
client_closed_request`` (as SMG counts them).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from adapters.context import STREAM_OUTCOME, incoming_request_id
from adapters.errors import ERROR_CODE_HEADER
from adapters.logs import REQUEST_ID

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499


class HttpMetrics:
    """``smg_http_requests_total``, ``smg_http_request_duration_seconds``, ``smg_http_responses_total``."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self._requests = Counter(
            "smg_http_requests",
            "Total HTTP requests by method and path",
            ["method", "path"],
            registry=registry,
        )
        self._duration = Histogram(
            "smg_http_request_duration_seconds", "HTTP request duration by method and path",
            ["method", "path"], buckets=buckets, registry=registry,
        )  # fmt: skip
        self._responses = Counter(
            "smg_http_responses", "Total HTTP responses by path, status_code and error_code",
            ["path", "status_code", "error_code"], registry=registry,
        )  # fmt: skip
        self._by_route: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._by_outcome: dict[tuple[str, int, str], Counter] = {}
        self._inflight: dict[int, float] = {}  # id(request) -> its start (perf_counter)
        registry.register(InflightAgeCollector(self._inflight))

    def started(self, method: str, path: str) -> Histogram:
        """Count a request; the histogram its duration goes to."""
        children = self._by_route.get((method, path))
        if children is None:
            children = self._by_route[method, path] = (
                self._requests.labels(method, path),
                self._duration.labels(method, path),
            )
        children[0].inc()
        return children[1]

    def answered(self, path: str, status: int, error_code: str) -> None:
        child = self._by_outcome.get((path, status, error_code))
        if child is None:
            child = self._by_outcome[path, status, error_code] = self._responses.labels(
                path, str(status), error_code
            )
        child.inc()

    def middleware(self) -> Middleware:
        """Outermost but for tracing: it sees the status and error code the client gets."""

        @web.middleware
        async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
            token = REQUEST_ID.set(incoming_request_id(request))  # the OpenAI routes set their own
            resource = request.match_info.route.resource
            path = resource.canonical if resource is not None else "other"
            duration = self.started(request.method, path)
            start = time.perf_counter()
            inflight, key = self._inflight, id(request)
            inflight[key] = start
            status, code = 500, "internal_error"
            try:
                response = await handler(request)
                status = response.status
                code = request.get(STREAM_OUTCOME) or str(response.headers.get(ERROR_CODE_HEADER, ""))
                if code == "client_closed_request":
                    status = CLIENT_CLOSED
                return response
            except web.HTTPException as exc:  # errors are answered inside; this is a redirect
                status, code = exc.status, ""
                raise
            except (asyncio.CancelledError, ConnectionResetError):
                status, code = CLIENT_CLOSED, "client_closed_request"
                if request.get(STREAM_OUTCOME) == "stream_error":  # the client left after the error event
                    status, code = 200, "stream_error"
                raise
            finally:
                del inflight[key]
                duration.observe(time.perf_counter() - start)
                self.answered(path, status, code)
                REQUEST_ID.reset(token)

        return observe


class ConnectionCollector(Collector):
    """``smg_http_connections_active``, read from the server at scrape time."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "smg_http_connections_active", "Currently active HTTP connections", value=self._count()
        )


# SMG's age buckets (seconds): a gauge per (gt, le] range, not cumulative, for heatmaps.
INFLIGHT_AGE_BOUNDS = (30, 60, 180, 300, 600, 1200, 3600, 7200, 14400, 28800, 86400)
_AGE_RANGES = [  # (gt, le] label values: (0, 30], (30, 60], ..., (86400, +Inf]
    [str(gt), str(le)]
    for gt, le in zip((0, *INFLIGHT_AGE_BOUNDS), (*INFLIGHT_AGE_BOUNDS, "+Inf"), strict=True)
]


class InflightAgeCollector(Collector):
    """``smg_http_inflight_request_age_count{gt, le}``: how many requests in flight have been running
    for an age in each range, computed at scrape time (SMG samples it every 20 s)."""

    def __init__(self, inflight: Mapping[int, float]) -> None:
        self._inflight = inflight

    def collect(self) -> Iterator[Metric]:
        counts = [0] * (len(INFLIGHT_AGE_BOUNDS) + 1)
        now = time.perf_counter()
        for started in list(self._inflight.values()):
            counts[bisect.bisect_left(INFLIGHT_AGE_BOUNDS, int(now - started))] += 1
        family = GaugeMetricFamily(
            "smg_http_inflight_request_age_count",
            "In-flight HTTP requests by age in seconds, per (gt, le] range",
            labels=["gt", "le"],
        )
        for labels, count in zip(_AGE_RANGES, counts, strict=True):
            family.add_metric(labels, count)
        yield family


def metrics_app(registry: CollectorRegistry) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def start_listener(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Serve ``/metrics`` on ``host:port`` (0: any free port) until the returned runner is cleaned up."""
    runner = web.AppRunner(metrics_app(registry), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    log.info("metrics listening on http://%s:%d/metrics", *bound[:2])
    return runner


def listener_host(config_host: str | None, gateway_host: str) -> str:
    """``--prometheus-host``, else the unspecified address of the gateway host's family (as SMG)."""
    return config_host or ("::" if ":" in gateway_host else "0.0.0.0")
