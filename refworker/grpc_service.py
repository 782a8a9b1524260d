"""The SGLang scheduler gRPC service, on ``smg_grpc_proto``'s own grpcio stubs (as real engines serve it)."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from refworker import control
from refworker.engine import GenerationRequest, Live
from refworker.grpc_common import CommonServicer, model_info_fields
from refworker.grpc_emit import Context
from refworker.grpc_loads import VERSION, loads_response
from refworker.grpc_messages import ResponseBuilder

_log = logging.getLogger(__name__)


class SchedulerService(CommonServicer, pb_grpc.SglangSchedulerServicer):  # type: ignore[misc]
    pb = pb

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
        role = engine.config.disaggregation_mode
        if role != "null" and not request.disaggregated_params.bootstrap_host:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a {role} worker needs disaggregated_params (bootstrap host, port and room)",
            )
        max_new_tokens = params.max_new_tokens if params.HasField("max_new_tokens") else None
        if role == "prefill":
            max_new_tokens = 1  # the prefill half: the prompt's KV cache and the first token
        constraint = params.WhichOneof("constraint")
        generation = GenerationRequest(
            request_id=rid,
            prompt_ids=list(request.tokenized.input_ids),
            max_new_tokens=max_new_tokens,
            min_new_tokens=0 if role == "prefill" else params.min_new_tokens,
            stop_token_ids=tuple(params.stop_token_ids),
            ignore_eos=params.ignore_eos,
            n=params.n,
            stream=request.stream,
        )
        plan = await self._plan(
            generation, None if constraint is None else (constraint, getattr(params, constraint)), context
        )
        vocab_size = engine.model.vocab_size

        def builder(live: Live) -> ResponseBuilder:
            return ResponseBuilder(plan, live, request, vocab_size)

        await self._serve(plan, builder, context)

    async def Abort(self, request: Any, context: Context) -> Any:
        _log.debug("abort %s (%s)", request.request_id, request.reason)
        if self._engine.abort(request.request_id, request.reason):
            return pb.AbortResponse(success=True, message="aborted")
        return pb.AbortResponse(success=False, message="not found")

    async def GetModelInfo(self, request: Any, context: Context) -> Any:
        return pb.GetModelInfoResponse(**model_info_fields(self._engine), weight_version="default")

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
        info.scheduler_info.update(control.record(engine))
        info.start_time.FromSeconds(int(engine.started_at))
        return info

    async def GetLoads(self, request: Any, context: Context) -> Any:
        return loads_response(self._engine.load(), request.dp_rank if request.HasField("dp_rank") else None)
