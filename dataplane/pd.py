"""Prefill/decode disaggregation over SGLang's gRPC service (``--pd-disaggregation``), as SMG runs it.

One prefill worker and one decode worker are picked by the policy among the model's routable workers of
each kind. The same ``GenerateRequest`` — same request id, same ``disaggregated_params`` (the prefill
worker's host, its bootstrap port, a random bootstrap room) — goes to both at once: the engines meet in
the room to move the KV cache. Only the decode stream becomes the client's answer; the prefill stream is
read to its end beside it (holding its own lease, and outliving the answer if it must) and its outcome
goes to its worker's circuit breaker. A client that leaves, or a decode that fails, tears both legs down
(each gets its Abort). Not retried on other workers (SMG re-runs the whole pipeline): a pair that fails
before the first token is the client's error. The decode leg's loop mirrors ``pipeline.execute``'s
attempt on purpose: sharing it would put one more generator between every worker message and the client
on the regular path. (PD over HTTP workers: ``adapters/http_workers.py``.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from dataplane.config import DEFAULT_BOOTSTRAP_PORT, WorkerType
from dataplane.errors import GatewayError, NoHealthyWorker, UnsupportedParameter, WorkerError
from dataplane.metrics import RequestMeter
from dataplane.output import ResponseAssembler
from dataplane.pipeline import Prepared, build_wire_request
from dataplane.routing import Policy, RouteRequest
from dataplane.telemetry import SELECT_WORKER, RequestTrace, stage
from dataplane.types import Bootstrap, Event, GenerateRequest, Started, WireRequest
from dataplane.workers import Worker, WorkerRegistry

log = logging.getLogger(__name__)

BOOTSTRAP_ROOMS = 2**31 - 1  # SGLang's room is an int32
_prefill_legs: set[asyncio.Task[None]] = set()  # legs still running after their request's answer


async def execute_pd(
    request: GenerateRequest,
    prepared: Prepared,
    registry: WorkerRegistry,
    policy: Policy,
    model_id: str,
    spawn: Callable[[Coroutine[Any, Any, object]], object],
    tracing: RequestTrace | None = None,
    meter: RequestMeter | None = None,
) -> AsyncGenerator[Event, None]:
    created = int(time.time())
    route = RouteRequest(
        model_id, text=prepared.text, token_ids=prepared.input_ids, routing_key=request.routing_key
    )
    try:
        with stage(tracing, SELECT_WORKER):
            prefill = select_role(registry, policy, route, "prefill")
            decode = select_role(registry, policy, route, "decode")
    except NoHealthyWorker as exc:
        if meter is not None:
            meter.failed(exc)
        raise
    if (runtime := _runtime(prefill, decode)) != "sglang":
        refusal = UnsupportedParameter(f"PD disaggregation is not supported yet for {runtime} workers")
        if meter is not None:
            meter.failed(refusal)
        raise refusal
    if meter is not None:
        meter.selected(decode)
    room = secrets.randbelow(BOOTSTRAP_ROOMS)
    bootstrap = Bootstrap(prefill.url.host, prefill.bootstrap_port or DEFAULT_BOOTSTRAP_PORT, room)
    traced = None if tracing is None else tracing.generate(decode.url.host, decode.url.port, 0)
    wire = build_wire_request(request, prepared, 0, None if traced is None else traced.metadata)
    wire = dataclasses.replace(wire, bootstrap=bootstrap)
    if traced is None:
        assembler = ResponseAssembler(prepared.output, request.sampling.n)
    else:
        assembler = traced.assembler(prepared.output, request.sampling.n)
    started = False
    finished = False
    outcome: int | None = None
    prefill_leg = asyncio.ensure_future(_prefill(registry, prefill, wire, spawn))
    _prefill_legs.add(prefill_leg)
    prefill_leg.add_done_callback(_prefill_legs.discard)
    with registry.lease(decode):
        stream = decode.client.generate(wire)
        try:
            async for message in stream:
                if not started:
                    started = True
                    if meter is not None:
                        meter.first_token()
                    yield Started(wire.request_id, model_id, created, decode.url.url)
                for event in assembler.feed(message):
                    yield event
                if assembler.cut_short:
                    break
            else:
                finished = True
            tail = assembler.finish()
            outcome = 200
        except WorkerError as exc:
            outcome = exc.status
            if traced is not None:
                traced.fail(exc)
            if meter is not None:
                meter.worker_failed(decode, exc)
                meter.failed(exc)
            raise
        except GatewayError as exc:
            if meter is not None:
                meter.failed(exc)
            raise
        finally:
            await stream.aclose()
            if not finished:
                spawn(decode.client.abort(wire.request_id, "Stream dropped"))
                prefill_leg.cancel()  # the request is over: so is its prefill
            if outcome is not None:
                registry.record_outcome(decode, outcome)
            if traced is not None:
                traced.end(outcome)
    if meter is not None:
        meter.succeeded(tail)
    if not started:
        yield Started(wire.request_id, model_id, created, decode.url.url)
    for event in tail:
        yield event


def _runtime(prefill: Worker, decode: Worker) -> str:
    """The pair's engine service; vLLM's PD (sequential, NIXL/Mooncake) is another flow, not built yet."""
    runtimes = {prefill.client.runtime, decode.client.runtime}
    return runtimes.pop() if len(runtimes) == 1 else " and ".join(sorted(runtimes))


def select_role(registry: WorkerRegistry, policy: Policy, route: RouteRequest, kind: WorkerType) -> Worker:
    """A routable ``kind`` (prefill or decode) worker of the model, by ``policy``."""
    candidates = [w for w in registry.routable(route.model_id) if w.worker_type == kind]
    worker = policy.select(route, candidates) if candidates else None
    if worker is None:
        raise NoHealthyWorker(f"no healthy {kind} worker is available for model {route.model_id!r}")
    return worker


async def _prefill(
    registry: WorkerRegistry,
    worker: Worker,
    wire: WireRequest,
    spawn: Callable[[Coroutine[Any, Any, object]], object],
) -> None:
    """Read the prefill leg to its end under its own lease; its outcome goes to its breaker."""
    with registry.lease(worker):
        stream = worker.client.generate(wire)
        outcome: int | None = None
        try:
            async for _ in stream:
                pass
            outcome = 200
        except WorkerError as exc:
            outcome = exc.status
            log.warning("prefill leg of %s on %s failed: %s", wire.request_id, worker.url.url, exc.message)
        finally:
            await stream.aclose()
            if outcome is None:  # cancelled: the request ended without it
                spawn(worker.client.abort(wire.request_id, "Stream dropped"))
            else:
                registry.record_outcome(worker, outcome)
