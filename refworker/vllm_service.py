"""vLLM's gRPC service (``vllm.grpc.engine.VllmEngine``) over the same engine, on ``smg_grpc_proto``'s stubs.

Generate takes token ids only, and no string stops (the gateway matches those itself); constraints map onto
the SGLang path's (``json_object`` is the JSON schema ``{"type": "object"}``, ``grammar`` is SGLang's
``ebnf_grammar``); ``seed`` is accepted and ignored: outputs are deterministic anyway.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import grpc
from smg_grpc_proto.generated import vllm_engine_pb2 as pb
from smg_grpc_proto.generated import vllm_engine_pb2_grpc as pb_grpc

from refworker.engine import Engine, GenerationRequest, Live
from refworker.grpc_common import (
    JSON_OBJECT_SCHEMA,
    MAX_LOGPROBS,  # vLLM's default --max-logprobs: more top alternatives per token (or -1, "all") is refused
    CommonServicer,
    Constraint,
    model_info_fields,
)
from refworker.grpc_emit import Context
from refworker.vllm_messages import VllmResponseBuilder, loads_response

SERVER_TYPE = "vllm-grpc"
# Engine-side constraint kinds (Engine.constrained_ids takes SGLang's field names) of vLLM's string ones.
_CONSTRAINT_KINDS = {"json_schema": "json_schema", "regex": "regex", "grammar": "ebnf_grammar"}
_log = logging.getLogger(__name__)


class VllmService(CommonServicer, pb_grpc.VllmEngineServicer):  # type: ignore[misc]
    pb = pb

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._last_receive = 0.0
        self._engine_id = f"refworker-{uuid.uuid4().hex[:12]}"  # a PD prefill worker's, in its KV handles

    async def _generate(self, request: Any, context: Context, metadata: Any) -> None:
        engine = self._engine
        rid: str = request.request_id
        self._last_receive = time.time()
        engine.record.request(rid, request, metadata)
        params = request.sampling_params
        if (refusal := refuse(request)) is not None:
            await context.abort(*refusal)
        kv_out = None
        if (role := engine.config.disaggregation_mode) != "null":
            wanted = "do_remote_decode" if role == "prefill" else "do_remote_prefill"
            try:
                kv_in = json.loads(request.kv_transfer_params_json)
            except ValueError:
                kv_in = {}
            if not isinstance(kv_in, dict) or kv_in.get(wanted) is not True:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a {role} worker needs kv_transfer_params_json with {wanted}: true",
                )
            if role == "prefill":  # what a NIXL producer hands the decode worker: where its blocks are
                kv_out = json.dumps(
                    {
                        "do_remote_prefill": True,
                        "do_remote_decode": False,
                        "remote_engine_id": self._engine_id,
                        "remote_request_id": rid,
                        "remote_block_ids": [0],
                        "remote_host": engine.config.host,
                    }
                )
        generation = GenerationRequest(
            request_id=rid,
            prompt_ids=list(request.tokenized.input_ids),
            max_new_tokens=params.max_tokens if params.HasField("max_tokens") else None,
            min_new_tokens=params.min_tokens,
            stop_token_ids=tuple(params.stop_token_ids),
            ignore_eos=params.ignore_eos,
            n=params.n,
            stream=request.stream,
        )
        plan = await self._plan(generation, constraint(params), context)
        logprobs = params.logprobs if params.HasField("logprobs") else None
        prompt_logprobs = params.prompt_logprobs if params.HasField("prompt_logprobs") else None
        vocab_size = engine.model.vocab_size
        eos = engine.eos_token_ids[0]

        def builder(live: Live) -> VllmResponseBuilder:
            return VllmResponseBuilder(
                plan,
                live,
                stream=request.stream,
                logprobs=logprobs,
                prompt_logprobs=prompt_logprobs,
                vocab_size=vocab_size,
                eos_token_id=eos,
                kv_transfer_params=kv_out,
            )

        await self._serve(plan, builder, context)

    async def Abort(self, request: Any, context: Context) -> Any:
        for rid in request.request_ids:
            found = self._engine.abort(rid, "")  # vLLM's Abort carries no reason
            _log.debug("abort %s (%s)", rid, "found" if found else "not found")
        return pb.AbortResponse()

    async def GetModelInfo(self, request: Any, context: Context) -> Any:
        return pb.GetModelInfoResponse(**model_info_fields(self._engine))

    async def GetServerInfo(self, request: Any, context: Context) -> Any:
        engine = self._engine
        return pb.GetServerInfoResponse(
            active_requests=len(engine.live),
            is_paused=False,
            last_receive_timestamp=self._last_receive,
            uptime_seconds=time.time() - engine.started_at,
            server_type=SERVER_TYPE,
            data_parallel_size=1,
            block_size=engine.config.block_size,
            max_num_seqs=engine.config.max_running,
        )

    async def GetLoads(self, request: Any, context: Context) -> Any:
        return loads_response(self._engine.load(), request.dp_rank if request.HasField("dp_rank") else None)


def refuse(request: Any) -> tuple[grpc.StatusCode, str] | None:
    """Why the worker cannot serve ``request`` as the status to end the RPC with; None if it can."""
    params = request.sampling_params
    if request.WhichOneof("input") == "text":
        return (
            grpc.StatusCode.INVALID_ARGUMENT,
            "text input is not supported by the reference worker: send tokenized.input_ids",
        )
    if params.stop:
        return (
            grpc.StatusCode.INVALID_ARGUMENT,
            "sampling_params.stop (string stops) is not supported by the reference worker",
        )
    for field in ("logprobs", "prompt_logprobs"):
        if params.HasField(field) and not 0 <= (value := getattr(params, field)) <= MAX_LOGPROBS:
            return (
                grpc.StatusCode.INVALID_ARGUMENT,
                f"sampling_params.{field}={value}: the reference worker serves 0 to {MAX_LOGPROBS}",
            )
    if (kind := params.WhichOneof("constraint")) in ("structural_tag", "choice"):
        return (
            grpc.StatusCode.UNIMPLEMENTED,
            f"sampling_params.{kind} constraints are not supported by the reference worker",
        )
    return None


def constraint(params: Any) -> Constraint | None:
    """The engine's constraint for the request's ``sampling_params`` (``refuse`` has vetted the kind)."""
    kind = params.WhichOneof("constraint")
    if kind == "json_object":
        return ("json_schema", JSON_OBJECT_SCHEMA) if params.json_object else None
    if kind is None:
        return None
    return (_CONSTRAINT_KINDS[kind], getattr(params, kind))
