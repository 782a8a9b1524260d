"""TensorRT-LLM's gRPC service (``trtllm.TrtllmService``) over the same engine, on ``smg_grpc_proto``'s stubs.

Generate reads what TensorRT-LLM's servicer (``tensorrt_llm/grpc/smg/servicer.py``) reads, within the
reference worker's limits:

- used: ``tokenized.input_token_ids`` (required), ``max_tokens`` (0: the engine default, as an unset
  maximum elsewhere), ``streaming``, ``stop_token_ids``, ``ignore_eos``, ``sampling_config``'s
  ``num_return_sequences`` (n; 0 is 1) and ``min_tokens``, ``guided_decoding`` (JSON_SCHEMA, REGEX and
  EBNF_GRAMMAR as the SGLang path's constraints, JSON as the schema ``{"type": "object"}``; a type other
  than JSON with an empty guide is no constraint, as TensorRT-LLM treats it) and ``output_config.logprobs``;
- refused: string ``stop`` (the gateway matches those itself), beam search, STRUCTURAL_TAG guides,
  ``output_config`` outputs the worker cannot make (prompt logprobs, logits, encoder output), images,
  disaggregated (context- or generation-only) requests, and an ``embedding_bias`` that is not one value
  per vocabulary entry (TensorRT-LLM refuses that too);
- accepted and ignored: the other sampling knobs (outputs are scripted and deterministic), bad words, the
  embedding bias, LoRA, prompt tuning, KV cache retention, lookahead, cache salt, arrival time, perf
  metrics, ``exclude_input_from_output`` (the input is never echoed) and ``include_stop_token_in_output``
  (a matched stop token always stays in the output).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from smg_grpc_proto.generated import trtllm_service_pb2 as pb
from smg_grpc_proto.generated import trtllm_service_pb2_grpc as pb_grpc

from refworker.engine import GenerationRequest, Live
from refworker.grpc_common import (
    JSON_OBJECT_SCHEMA,
    MAX_LOGPROBS,
    CommonServicer,
    Constraint,
    reported_model_path,
)
from refworker.grpc_emit import Context
from refworker.grpc_loads import VERSION
from refworker.trtllm_messages import TrtllmResponseBuilder

# GetServerInfo's backend, one of the proto's "tensorrt" / "pytorch" (TensorRT-LLM's default backend).
# TensorRT-LLM's own servicer sends "tensorrt-llm" there today; the gateway only makes a label of it.
BACKEND = "pytorch"
_GUIDE = pb.GuidedDecodingParams
# Engine-side constraint kinds (Engine.constrained_ids takes SGLang's field names) of the guide types.
_GUIDE_KINDS = {
    _GUIDE.GUIDE_TYPE_JSON_SCHEMA: "json_schema",
    _GUIDE.GUIDE_TYPE_REGEX: "regex",
    _GUIDE.GUIDE_TYPE_EBNF_GRAMMAR: "ebnf_grammar",
}
_UNSERVED_OUTPUTS = ("return_context_logits", "return_generation_logits", "return_encoder_output")
_log = logging.getLogger(__name__)


class TrtllmService(CommonServicer, pb_grpc.TrtllmServiceServicer):  # type: ignore[misc]
    pb = pb
    stream_field = "streaming"
    prompt_field = "input_token_ids"

    async def _generate(self, request: Any, context: Context, metadata: Any) -> None:
        engine = self._engine
        rid: str = request.request_id
        engine.record.request(rid, request, metadata)
        if (refusal := refuse(request, engine.model.vocab_size)) is not None:
            await context.abort(*refusal)
        config = request.sampling_config
        output = request.output_config
        generation = GenerationRequest(
            request_id=rid,
            prompt_ids=list(request.tokenized.input_token_ids),
            max_new_tokens=request.max_tokens or None,
            min_new_tokens=config.min_tokens,
            stop_token_ids=tuple(request.stop_token_ids),
            ignore_eos=request.ignore_eos,
            n=config.num_return_sequences,
            stream=request.streaming,
        )
        plan = await self._plan(generation, constraint(request), context)
        logprobs = output.logprobs if output.HasField("logprobs") else None
        vocab_size = engine.model.vocab_size
        eos = engine.eos_token_ids[0]

        def builder(live: Live) -> TrtllmResponseBuilder:
            return TrtllmResponseBuilder(
                plan,
                live,
                stream=request.streaming,
                logprobs=logprobs,
                vocab_size=vocab_size,
                eos_token_id=eos,
            )

        await self._serve(plan, builder, context)

    async def HealthCheck(self, request: Any, context: Context) -> Any:
        # The gateway counts a worker healthy when `status` is "OK" (trimmed, any case).
        return pb.HealthCheckResponse(status="shutting down" if self.shutting_down else "OK")

    async def Abort(self, request: Any, context: Context) -> Any:
        rid = request.request_id
        found = self._engine.abort(rid, "")  # TensorRT-LLM's Abort carries no reason
        _log.debug("abort %s (%s)", rid, "found" if found else "not found")
        return pb.AbortResponse(success=found, message=f"Request {rid} {'aborted' if found else 'not found'}")

    async def GetModelInfo(self, request: Any, context: Context) -> Any:
        engine = self._engine
        model = engine.model
        return pb.GetModelInfoResponse(
            model_id=reported_model_path(engine),
            max_input_len=model.max_context_length,
            max_seq_len=model.max_context_length,
            vocab_size=model.vocab_size,
        )

    async def GetServerInfo(self, request: Any, context: Context) -> Any:
        return pb.GetServerInfoResponse(
            version=VERSION,
            backend=BACKEND,
            tensor_parallel_size=1,
            pipeline_parallel_size=1,
            context_parallel_size=1,
            world_size=1,
        )


def refuse(request: Any, vocab_size: int) -> tuple[grpc.StatusCode, str] | None:
    """Why the worker cannot serve ``request`` as the status to end the RPC with; None if it can."""
    invalid, unimplemented = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED
    if not request.HasField("tokenized"):
        return invalid, "Missing tokenized input"  # TensorRT-LLM's own words
    if request.stop:
        return invalid, "stop (string stops) is not supported by the reference worker"
    output = request.output_config
    if output.HasField("logprobs") and not 0 <= output.logprobs <= MAX_LOGPROBS:
        return (
            invalid,
            f"output_config.logprobs={output.logprobs}: the reference worker serves 0 to {MAX_LOGPROBS}",
        )
    if request.embedding_bias and len(request.embedding_bias) != vocab_size:
        return (
            invalid,
            f"embedding_bias length ({len(request.embedding_bias)}) must match vocab_size ({vocab_size})",
        )
    config = request.sampling_config
    if config.beam_width > 1 or any(width > 1 for width in config.beam_width_array):
        return (
            unimplemented,
            "beam search (sampling_config.beam_width > 1) is not supported by the reference worker",
        )
    guided = request.guided_decoding
    if guided.guide_type == _GUIDE.GUIDE_TYPE_STRUCTURAL_TAG and guided.guide:
        return unimplemented, "STRUCTURAL_TAG guided decoding is not supported by the reference worker"
    unserved = [f for f in _UNSERVED_OUTPUTS if getattr(output, f)]
    if output.HasField("prompt_logprobs"):
        unserved.insert(0, "prompt_logprobs")
    if unserved:
        return unimplemented, f"output_config.{unserved[0]} is not supported by the reference worker"
    if request.multimodal_input.image_data:
        return unimplemented, "multimodal input is not supported by the reference worker"
    disaggregated = request.disaggregated_params.request_type
    if disaggregated != pb.DisaggregatedParams.REQUEST_TYPE_CONTEXT_AND_GENERATION:
        kind = pb.DisaggregatedParams.RequestType.Name(disaggregated)
        return unimplemented, f"disaggregated {kind} requests are not supported by the reference worker"
    return None


def constraint(request: Any) -> Constraint | None:
    """The engine's constraint for the request's ``guided_decoding`` (``refuse`` has vetted the type)."""
    guided = request.guided_decoding  # unset: GUIDE_TYPE_UNSPECIFIED
    if guided.guide_type == _GUIDE.GUIDE_TYPE_JSON:
        return ("json_schema", JSON_OBJECT_SCHEMA)
    kind = _GUIDE_KINDS.get(guided.guide_type)
    return None if kind is None or not guided.guide else (kind, guided.guide)
