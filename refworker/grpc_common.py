"""What the SGLang, vLLM and TensorRT-LLM gRPC services share: Generate's skeleton and the
``smg.grpc.common`` RPCs.

A service subclasses ``CommonServicer`` first, then its engine's generated servicer (whose methods all
answer UNIMPLEMENTED), sets ``pb`` to its engine's message module (and the ``*_field`` names where its
``GenerateRequest`` differs) and implements ``_generate`` with ``_plan`` and ``_serve`` around its own
message builder. Only the RPCs an engine's service declares are registered: TensorRT-LLM's has no
FlushCache, so the inherited method is simply never called there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

import grpc
from smg_grpc_proto.generated import common_pb2 as common

from refworker import tokenizer_bundle, tracing
from refworker.engine import Engine, GenerationRequest, Live, Plan, RequestRejected
from refworker.grpc_emit import Context, MessageBuilder, emit
from refworker.grpc_loads import batch_message, engine_load

# FlushCache with a timeout: how often to look whether the engine went idle.
FLUSH_POLL_S = 0.01
_log = logging.getLogger(__name__)

# A constraint as the engine takes it: (SGLang constraint field name, value); see Engine.constrained_ids.
Constraint = tuple[str, str]
# "Any JSON object" (vLLM's json_object, TensorRT-LLM's GUIDE_TYPE_JSON) as the engine's json_schema.
JSON_OBJECT_SCHEMA = '{"type": "object"}'
# Top alternatives per token served at most (vLLM's default --max-logprobs); more is refused.
MAX_LOGPROBS = 20


class CommonServicer:
    pb: ClassVar[ModuleType]  # the engine's generated message module
    # GenerateRequest's stream flag and TokenizedInput's prompt ids, as the engine's proto names them.
    stream_field: ClassVar[str] = "stream"
    prompt_field: ClassVar[str] = "input_ids"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.shutting_down = False
        self._bundle: asyncio.Future[tokenizer_bundle.Bundle] | None = None  # built on first request

    async def Generate(self, request: Any, context: Context) -> None:
        metadata = context.invocation_metadata() or ()
        attributes = {"smg.request_id": request.request_id, "stream": getattr(request, self.stream_field)}
        with tracing.request_span(metadata, attributes) as span:
            await self._generate(request, context, metadata)
            if span is not None:
                span.set_attribute("prompt_tokens", len(getattr(request.tokenized, self.prompt_field)))

    async def _generate(self, request: Any, context: Context, metadata: Any) -> None:
        raise NotImplementedError

    async def _plan(
        self, request: GenerationRequest, constraint: Constraint | None, context: Context
    ) -> Plan:
        """The engine's plan; a rejection ends the RPC with its status."""
        engine = self._engine
        try:
            if constraint is not None:
                output_ids = await engine.constrained_ids(*constraint)
                request = dataclasses.replace(request, output_ids=output_ids)
            return engine.plan(request)
        except RequestRejected as exc:
            _log.info("request %s rejected: %s %s", request.request_id, exc.status, exc.message)
            await context.abort(grpc.StatusCode[exc.status], exc.message)
            raise AssertionError("context.abort returned") from None  # it raises; this satisfies mypy

    async def _serve(self, plan: Plan, builder: Callable[[Live], MessageBuilder], context: Context) -> None:
        """Run ``plan`` as a live request, written by the builder made for it."""
        engine = self._engine
        live = engine.begin(plan)
        try:
            await emit(plan, live, builder(live), context)
        except asyncio.CancelledError:
            _log.debug("request %s cancelled by the client", plan.request_id)
            engine.record.cancel(plan.request_id)
            raise
        finally:
            engine.finish(live)

    async def HealthCheck(self, request: Any, context: Context) -> Any:
        if self.shutting_down:
            return self.pb.HealthCheckResponse(healthy=False, message="shutting down")
        return self.pb.HealthCheckResponse(healthy=True, message="ok")

    async def FlushCache(self, request: Any, context: Context) -> Any:
        engine = self._engine
        deadline = time.monotonic() + max(request.timeout_s, 0.0)
        while not engine.flush_cache():
            if time.monotonic() >= deadline:
                return common.FlushCacheResponse(
                    success=False, message=f"{len(engine.live)} requests running"
                )
            await asyncio.sleep(FLUSH_POLL_S)
        return common.FlushCacheResponse(success=True, message="flushed")

    async def GetTokenizer(self, request: Any, context: Context) -> None:
        if self._bundle is None:  # zipping takes a while: off the loop, once
            build = asyncio.to_thread(tokenizer_bundle.build, self._engine.model.path)
            self._bundle = asyncio.ensure_future(build)
        try:
            bundle = await asyncio.shield(self._bundle)
        except FileNotFoundError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        for data, sha256 in bundle.chunks():
            await context.write(common.GetTokenizerChunk(data=data, sha256=sha256))

    async def SubscribeKvEvents(self, request: Any, context: Context) -> None:
        engine = self._engine
        if not engine.config.kv_events:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "KV events are off (--no-kv-events)")
        events = engine.events
        subscription = events.subscribe(request.start_sequence_number, engine.cache.live_blocks)
        load_first = request.load_records_before_first_batch
        sample = 0
        try:
            if load_first and not subscription.queue and not subscription.cursor:
                sample += 1
                await context.write(
                    batch_message(None, 0, time.time(), engine_load(engine.load(), sample, True, True))
                )
                subscription.sent(None)
            while True:
                batch = await subscription.next()
                if subscription.overflowed:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "subscriber too slow; resume from its last sequence",
                    )
                if batch is None and not (subscription.cursor or load_first):
                    subscription.sent(None)  # a subscriber without load-only records: nothing to say yet
                    continue
                sample += 1
                telemetry = batch is None or subscription.first_record
                load = engine_load(engine.load(), sample, batch is None, telemetry)
                await context.write(batch_message(batch, subscription.cursor, time.time(), load))
                subscription.sent(batch)
        finally:
            events.unsubscribe(subscription)


def reported_model_path(engine: Engine) -> str:
    """The model path GetModelInfo reports: ``--reported-model-path``, else the model directory."""
    return engine.config.reported_model_path or str(engine.model.path)


def model_info_fields(engine: Engine) -> dict[str, Any]:
    """``GetModelInfoResponse`` fields whose names and meaning SGLang and vLLM share."""
    model = engine.model
    reported = reported_model_path(engine)
    fields: dict[str, Any] = {
        "model_path": reported,
        "tokenizer_path": reported,
        "is_generation": True,
        "served_model_name": engine.config.served_model_name,
        "max_context_length": model.max_context_length,
        "vocab_size": model.vocab_size,
        "model_type": model.model_type,
        "eos_token_ids": list(engine.eos_token_ids),
        "max_req_input_len": model.max_context_length,
        "architectures": list(model.architectures),
    }
    if model.bos_token_id is not None:
        fields["bos_token_id"] = model.bos_token_id
    if model.pad_token_id is not None:
        fields["pad_token_id"] = model.pad_token_id
    return fields
