"""Health, readiness, models, the workers API (list, add, inspect, remove) and ``/flush_cache``.

A worker's id is 16 hex digits of the SHA-256 of its canonical URL (``WorkerUrl.worker_id``): URL-safe,
and the same for the same address in every gateway process and across restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from adapters.context import GATEWAY
from adapters.errors import error_response
from adapters.params import parse_body
from dataplane.client import FlushesCache
from dataplane.config import RUNTIMES, WORKER_TYPES, WorkerSpec, WorkerUrl
from dataplane.errors import ConfigError, InvalidRequest, WorkerError
from dataplane.workers import DuplicateWorker, Worker

FLUSH_TIMEOUT_S = 10.0
# What POST /workers takes of SMG's WorkerSpec; any other field is refused, not ignored.
WORKER_FIELDS = frozenset(
    {
        "url",
        "labels",
        "api_key",
        "worker_type",
        "connection_mode",
        "runtime_type",
        "runtime",
        "bootstrap_port",
    }
)


def _json(payload: object, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


async def liveness(_: web.Request) -> web.Response:
    return web.Response(text="OK")


async def readiness(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    total = len(gateway.registry.all())
    healthy = gateway.registry.ready_count()
    if gateway.ready:
        return _json({"status": "ready", "healthy_workers": healthy, "total_workers": total})
    return _json(
        {
            "status": "not ready",
            "reason": "insufficient healthy workers",
            "healthy_workers": healthy,
            "total_workers": total,
        },
        status=503,
    )


async def models(request: web.Request) -> web.Response:
    data = [
        {"id": m.id, "object": "model", "created": m.created, "owned_by": "smg"}
        for m in request.app[GATEWAY].models()
    ]
    return _json({"object": "list", "data": data})


async def workers(request: web.Request) -> web.Response:
    registry = request.app[GATEWAY].registry
    model = request.query.get("model")
    listed = [w for w in registry.all() if model is None or w.model_id == model]
    return _json(
        {
            "workers": [w.describe() for w in listed],
            "total": len(listed),
            "stats": {
                "total_workers": len(listed),
                "healthy_workers": sum(w.healthy for w in listed),
                "total_models": len({w.model_id for w in listed if w.model_id}),
                "total_load": sum(w.load for w in listed),
                "by_type": {kind: sum(w.worker_type == kind for w in listed) for kind in WORKER_TYPES},
            },
        }
    )


async def add_worker(request: web.Request) -> web.Response:
    """``POST /workers``: 202 at once; the worker registers in the background (``pending`` → ``ready``)."""
    spec = worker_spec(parse_body(await request.read()))
    pd = request.app[GATEWAY].config.pd_disaggregation
    if (spec.worker_type == "regular") == pd:
        wanted = "'prefill' or 'decode'" if pd else "'regular'"
        mode = "with" if pd else "without"
        raise InvalidRequest(
            f"a gateway {mode} --pd-disaggregation takes {wanted} workers", param="worker_type"
        )
    try:
        worker = request.app[GATEWAY].add_worker(spec)
    except DuplicateWorker as exc:
        return error_response(409, str(exc), "worker_already_exists")
    location = f"/workers/{worker.id}"
    body = {"id": worker.id, "url": worker.url.url, "status": worker.status, "location": location}
    return _json(body, status=202, headers={"Location": location})


async def get_worker(request: web.Request) -> web.Response:
    worker = _worker(request)
    return _json(worker.describe()) if isinstance(worker, Worker) else worker


async def remove_worker(request: web.Request) -> web.Response:
    """``DELETE /workers/{id}``: the worker takes no new requests; it is removed once its last one ends."""
    worker = _worker(request)
    if not isinstance(worker, Worker):
        return worker
    request.app[GATEWAY].drain(worker)
    return _json({"id": worker.id, "url": worker.url.url, "status": worker.status}, status=202)


async def flush_cache(request: web.Request) -> web.Response:
    """``POST /flush_cache``: every worker drops its prefix cache (gRPC ``FlushCache``, HTTP
    ``POST /flush_cache``), all at once; 200 when all did, 206 with who did not and why otherwise."""
    workers = request.app[GATEWAY].registry.all()
    outcomes = await asyncio.gather(*(_flush(w) for w in workers))
    done = [w.url.url for w, error in zip(workers, outcomes, strict=True) if error is None]
    failed = [
        {"worker": w.url.url, "error": error} for w, error in zip(workers, outcomes, strict=True) if error
    ]
    body: dict[str, Any] = {
        "status": "partial_success" if failed else "success",
        "message": f"Flushed the cache on {len(done)} of {len(workers)} workers",
        "workers_flushed": len(done),
        "total_workers": len(workers),
    }
    if not failed:
        return _json(body)
    return _json(body | {"successful": done, "failed": failed}, status=206)


async def _flush(worker: Worker) -> str | None:
    """``None`` once flushed, else why not."""
    client = worker.client
    if not isinstance(client, FlushesCache):
        return f"its service ({client.runtime}) has no cache flush"
    try:
        await client.flush_cache(FLUSH_TIMEOUT_S)
    except WorkerError as exc:
        return exc.message
    return None


def _worker(request: web.Request) -> Worker | web.Response:
    worker_id = request.match_info["worker_id"]
    worker = request.app[GATEWAY].registry.get(worker_id)
    if worker is None:
        return error_response(404, f"worker {worker_id!r} not found", "worker_not_found")
    return worker


def worker_spec(body: Mapping[str, Any]) -> WorkerSpec:
    """A ``WorkerSpec`` from a ``POST /workers`` body; 400 for anything missing, unknown or invalid."""
    unknown = sorted(set(body) - WORKER_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"unsupported worker field(s): {', '.join(unknown)} "
            f"(supported: {', '.join(sorted(WORKER_FIELDS))})",
            param=unknown[0],
        )
    raw_url = body.get("url")
    if not isinstance(raw_url, str) or not raw_url:
        raise InvalidRequest("'url' is required: the worker's grpc:// or http(s):// address", param="url")
    try:
        url = WorkerUrl.parse(raw_url)
    except ConfigError as exc:
        raise InvalidRequest(exc.message, param="url") from exc
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidRequest("'labels' must be an object of strings", param="labels")
    api_key = body.get("api_key")
    if api_key is not None and not isinstance(api_key, str):
        raise InvalidRequest("'api_key' must be a string", param="api_key")
    worker_type = body.get("worker_type", "regular")
    if worker_type not in WORKER_TYPES:
        raise InvalidRequest(f"'worker_type' must be one of {', '.join(WORKER_TYPES)}", param="worker_type")
    port = body.get("bootstrap_port")
    if port is not None and (worker_type != "prefill" or not isinstance(port, int) or not 0 < port < 65536):
        raise InvalidRequest("'bootstrap_port' is a prefill worker's port number", param="bootstrap_port")
    mode = body.get("connection_mode")
    if mode is not None and mode != url.mode:
        raise InvalidRequest(
            f"'connection_mode' {mode!r} does not match the url's scheme ({url.mode})",
            param="connection_mode",
        )
    runtime = body.get("runtime_type", body.get("runtime", "auto"))  # SMG's field and its alias
    if runtime not in RUNTIMES:
        raise InvalidRequest(
            f"'runtime_type' {runtime!r} is not supported; one of {', '.join(RUNTIMES)}", param="runtime_type"
        )
    return WorkerSpec(url, labels, api_key or None, runtime, worker_type, port)
