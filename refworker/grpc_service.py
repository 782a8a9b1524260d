"""The SGLang scheduler gRPC service, on ``smg_grpc_proto``'s own grpcio stubs (as real engines serve it)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeAlias

import grpc
from smg_grpc_proto.generated import common_pb2 as common
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from refworker import tokenizer_bundle, tracing
from refworker.engine import Engine, GenerationRequest, Live, Plan, RequestRejected
from refworker.grpc_loads import VERSION, batch_message, engine_load, loads_response
from refworker.grpc_messages import ResponseBuilder

# FlushCache with a timeout: how often to look whether the engine went idle.
FLUSH_POLL_S = 0.01
_log = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class SchedulerService(pb_grpc.SglangSchedulerServicer):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.shutting_down = False
        self._bundle: asyncio.Future[tokenizer_bundle.Bundle] | None = None  # built on first request

    async def Generate(self, request: Any, context: Context) -> None:
        metadata = context.invocation_metadata() or ()
        attributes = {"smg.request_id": request.request_id, "stream": request.stream}
        with tracing.request_span(metadata, attributes) as span:
            await self._generate(request, context, metadata)
            if span is not None:
                span.set_attribute("prompt_tokens", len(request.tokenized.input_ids))

    async def _generate(self, request: Any, context: Context, metadata: Any) -> None:
        engine = self._engine
        rid: str = request.request_id
        engine.record.request(rid, request, metadata)
        params = request.sampling_params
        if params.stop:
            # The tokenizer-less SGLang gRPC worker cannot match text; gateways send stop_token_ids.
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "sampling_params.stop (string stops) is not supported"
            )
        try:
            output_ids = None
            if (constraint := params.WhichOneof("constraint")) is not None:
                output_ids = await engine.constrained_ids(constraint, getattr(params, constraint))
            plan = engine.plan(
                GenerationRequest(
                    request_id=rid,
                    prompt_ids=list(request.tokenized.input_ids),
                    max_new_tokens=params.max_new_tokens if params.HasField("max_new_tokens") else None,
                    min_new_tokens=params.min_new_tokens,
                    stop_token_ids=tuple(params.stop_token_ids),
                    ignore_eos=params.ignore_eos,
                    n=params.n,
                    stream=request.stream,
                    output_ids=output_ids,
                )
            )
        except RequestRejected as exc:
            _log.info("request %s rejected: %s %s", rid, exc.status, exc.message)
            await context.abort(grpc.StatusCode[exc.status], exc.message)
        live = engine.begin(plan)
        try:
            await _emit(plan, live, ResponseBuilder(plan, live, request, engine.model.vocab_size), context)
        except asyncio.CancelledError:
            _log.debug("request %s cancelled by the client", rid)
            engine.record.cancel(rid)
            raise
        finally:
            engine.finish(live)

    async def HealthCheck(self, request: Any, context: Context) -> Any:
        if self.shutting_down:
            return pb.HealthCheckResponse(healthy=False, message="shutting down")
        return pb.HealthCheckResponse(healthy=True, message="ok")

    async def Abort(self, request: Any, context: Context) -> Any:
        _log.debug("abort %s (%s)", request.request_id, request.reason)
        if self._engine.abort(request.request_id, request.reason):
            return pb.AbortResponse(success=True, message="aborted")
        return pb.AbortResponse(success=False, message="not found")

    async def GetModelInfo(self, request: Any, context: Context) -> Any:
        engine = self._engine
        model = engine.model
        reported = engine.config.reported_model_path or str(model.path)
        info = pb.GetModelInfoResponse(
            model_path=reported,
            tokenizer_path=reported,
            is_generation=True,
            weight_version="default",
            served_model_name=engine.config.served_model_name,
            max_context_length=model.max_context_length,
            vocab_size=model.vocab_size,
            model_type=model.model_type,
            eos_token_ids=list(engine.eos_token_ids),
            max_req_input_len=model.max_context_length,
            architectures=list(model.architectures),
        )
        if model.bos_token_id is not None:
            info.bos_token_id = model.bos_token_id
        if model.pad_token_id is not None:
            info.pad_token_id = model.pad_token_id
        return info

    async def GetServerInfo(self, request: Any, context: Context) -> Any:
        engine = self._engine
        config = engine.config
        info = pb.GetServerInfoResponse(
            active_requests=len(engine.live),
            is_paused=False,
            uptime_seconds=time.time() - engine.started_at,
            sglang_version=VERSION,
            server_type="grpc",
            max_total_num_tokens=engine.max_total_tokens,
        )
        info.server_args.update(
            {
                "model_path": str(engine.model.path),
                "served_model_name": config.served_model_name,
                "tensor_parallel_size": 1,
                "data_parallel_size": 1,
                "max_running_requests": config.max_running,
                "refworker_script": config.script,
                "refworker_realistic": config.realistic,
                "page_size": config.block_size,
            }
        )
        info.scheduler_info.update(engine.record.to_dict())
        counters = engine.counters
        info.scheduler_info.update(
            {
                "served_requests": engine.total_requests,
                "prompt_tokens": counters.prompt_tokens,
                "cached_tokens": counters.cached_tokens,
                "kv_event_subscribers": engine.events.subscribers,
            }
        )
        info.start_time.FromSeconds(int(engine.started_at))
        return info

    async def GetLoads(self, request: Any, context: Context) -> Any:
        return loads_response(self._engine.load(), request.dp_rank if request.HasField("dp_rank") else None)

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


async def _emit(plan: Plan, live: Live, build: ResponseBuilder, context: Context) -> None:
    """Walk the plan's steps: sleep until each is due, write it; honour stall, fail_after and Abort."""
    stream = build.stream
    write = context.write
    loop = asyncio.get_running_loop()
    started = loop.time()
    fail_at = -1 if plan.fail_after is None else plan.fail_after
    stall_at = (1 if stream else 0) if plan.stall else -1
    sent_upto = [0] * len(plan.choices)
    finished = [False] * len(plan.choices)
    sent = 0

    async def may_send() -> bool:
        """Before every message: stall, injected failure; False once the request was aborted."""
        nonlocal sent
        if sent == stall_at:
            while not live.aborted:  # in realistic mode the simulator may wake a pause early
                await live.pause(None)
        if live.aborted:
            return False
        if sent == fail_at:
            await context.abort(grpc.StatusCode.INTERNAL, "injected failure")
        sent += 1
        return True

    for due, index, start, end, last in plan.steps:
        if due or live.ticket is not None:
            await live.until(started + due, end)
        if stream and end > start:
            if not await may_send():
                break
            await write(build.chunk(index, start, end))
            sent_upto[index] = end
        if last:
            if not await may_send():
                break
            await write(build.complete(index, start, end))
            sent_upto[index] = end
            finished[index] = True
    if live.aborted:
        for index, upto in enumerate(sent_upto):
            if not finished[index]:
                await write(build.aborted(index, upto if stream else 0, upto))
