"""Prefill/decode disaggregation over gRPC workers (``--pd-disaggregation``), as SMG runs it.

One prefill worker and one decode worker are picked by the policy among the model's routable workers of
each kind. vLLM workers (NixlConnector) run in sequence: a copy of the request for one token, not
streamed, with ``kv_transfer_params_json = {"do_remote_decode": true, "do_remote_prefill": false}`` goes
to the prefill worker first; the KV transfer parameters its Complete returns go verbatim, with the
original request, to the decode worker, whose stream is the answer. SGLang workers run in parallel: the
same ``GenerateRequest`` — same request id, same ``disaggregated_params`` (the prefill
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
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from typing import Any

from dataplane.config import DEFAULT_BOOTSTRAP_PORT, WorkerType
from dataplane.errors import GatewayError, NoHealthyWorker, UnsupportedParameter, WorkerError
from dataplane.metrics import RequestMeter
from dataplane.output import ResponseAssembler
from dataplane.pipeline import Prepared, build_wire_request
from dataplane.routing import Policy, RouteRequest
from dataplane.telemetry import SELECT_WORKER, RequestTrace, stage
from dataplane.types import Bootstrap, Complete, Event, GenerateRequest, Started, WireRequest
from dataplane.workers import Worker, WorkerRegistry

log = logging.getLogger(__name__)

BOOTSTRAP_ROOMS = 2**31 - 1  # SGLang's room is an int32
# The gateway's ``spawn``: a task it keeps (and cancels when it stops).
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


async def execute_pd(
    request: GenerateRequest,
    prepared: Prepared,
    registry: WorkerRegistry,
    policies: Mapping[WorkerType, Policy],
    model_id: str,
    spawn: Spawn,
    tracing: RequestTrace | None = None,
    meter: RequestMeter | None = None,
) -> AsyncGenerator[Event, None]:
    created = int(time.time())
    route = RouteRequest(
        model_id, text=prepared.text, token_ids=prepared.input_ids, routing_key=request.routing_key
    )
    try:
        with stage(tracing, SELECT_WORKER):
            prefill = select_role(registry, policies["prefill"], route, "prefill")
            decode = select_role(registry, policies["decode"], route, "decode")
    except NoHealthyWorker as exc:
        if meter is not None:
            meter.failed(exc)
        raise
    if (runtime := _runtime(prefill, decode)) not in ("sglang", "vllm"):
        refusal = UnsupportedParameter(f"PD disaggregation is not supported yet for {runtime} workers")
        if meter is not None:
            meter.failed(refusal)
        raise refusal
    if meter is not None:
        meter.selected(decode)
    traced = None if tracing is None else tracing.generate(decode.url.host, decode.url.port, 0)
    wire = build_wire_request(request, prepared, 0, None if traced is None else traced.metadata)
    prefill_leg: asyncio.Task[Any] | None = None
    if runtime == "vllm":  # sequential: the prefill first, its KV handle then goes to the decode
        try:
            handle = await _vllm_prefill(registry, prefill, wire, spawn)
        except WorkerError as exc:
            if meter is not None:
                meter.worker_failed(prefill, exc)
                meter.failed(exc)
            raise
        wire = dataclasses.replace(wire, kv_transfer_params=handle)
    else:  # SGLang: both at once, meeting in a bootstrap room
        room = secrets.randbelow(BOOTSTRAP_ROOMS)
        port = prefill.bootstrap_port or DEFAULT_BOOTSTRAP_PORT
        wire = dataclasses.replace(wire, bootstrap=Bootstrap(prefill.url.host, port, room))
        prefill_leg = spawn(_prefill(registry, prefill, wire, spawn))  # may outlive the answer
    if traced is None:
        assembler = ResponseAssembler(prepared.output, request.sampling.n)
    else:
        assembler = traced.assembler(prepared.output, request.sampling.n)
    started = False
    finished = False
    outcome: int | None = None
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
                if prefill_leg is not None:
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
    """The pair's engine service (a mixed pair names both)."""
    runtimes = {prefill.client.runtime, decode.client.runtime}
    return runtimes.pop() if len(runtimes) == 1 else " and ".join(sorted(runtimes))


def select_role(registry: WorkerRegistry, policy: Policy, route: RouteRequest, kind: WorkerType) -> Worker:
    """A routable ``kind`` (prefill or decode) worker of the model, by ``policy``."""
    candidates = [w for w in registry.routable(route.model_id) if w.worker_type == kind]
    worker = policy.select(route, candidates) if candidates else None
    if worker is None:
        raise NoHealthyWorker(f"no healthy {kind} worker is available for model {route.model_id!r}")
    return worker


# vLLM's PD prefill (NixlConnector): one token, nothing streamed, the KV cache kept for a remote decode.
_VLLM_PREFILL = json.dumps({"do_remote_decode": True, "do_remote_prefill": False}, separators=(",", ":"))


async def _vllm_prefill(
    registry: WorkerRegistry,
    worker: Worker,
    wire: WireRequest,
    spawn: Spawn,
) -> str | None:
    """Run the prefill copy of ``wire`` to its end (as SMG: ``max_tokens`` 1, ``n`` 1, stops cleared,
    EOS ignored, not streamed) and return the KV transfer parameters its Complete carries, verbatim
    (``None``: the engine gave none, and the decode worker recomputes the prompt)."""
    sampling = dataclasses.replace(
        wire.sampling, max_tokens=1, min_tokens=0, n=1, stop=(), stop_token_ids=(), ignore_eos=True
    )
    copy = dataclasses.replace(
        wire, sampling=sampling, stop_token_ids=(), stream=False, kv_transfer_params=_VLLM_PREFILL
    )
    handle: str | None = None
    with registry.lease(worker):
        stream = worker.client.generate(copy)
        outcome: int | None = None
        try:
            async for message in stream:
                if isinstance(message, Complete) and message.kv_transfer_params:
                    handle = message.kv_transfer_params
            outcome = 200
        except WorkerError as exc:
            outcome = exc.status
            raise
        finally:
            await stream.aclose()
            if outcome is None:  # the client left while it ran
                spawn(worker.client.abort(copy.request_id, "Stream dropped"))
            else:
                registry.record_outcome(worker, outcome)
    if handle is None:
        log.warning("prefill of %s on %s returned no KV transfer parameters", wire.request_id, worker.url.url)
    return handle


async def _prefill(
    registry: WorkerRegistry,
    worker: Worker,
    wire: WireRequest,
    spawn: Spawn,
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
