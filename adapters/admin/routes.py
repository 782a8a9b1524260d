"""Health, readiness, models and workers."""

from __future__ import annotations

import orjson
from aiohttp import web

from adapters.context import GATEWAY


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


async def liveness(_: web.Request) -> web.Response:
    return web.Response(text="OK")


async def readiness(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    total = len(gateway.registry.all())
    healthy = gateway.registry.healthy_count()
    if healthy:
        return _json({"status": "ready", "healthy_workers": healthy, "total_workers": total})
    return _json(
        {
            "status": "not ready",
            "reason": "insufficient healthy workers",
            "healthy_workers": 0,
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
            },
        }
    )
