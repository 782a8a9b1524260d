"""A worker serving TensorRT-LLM's gRPC service (``python -m tensorrt_llm.commands.serve … --grpc``).

Same shape as ``SglangClient`` (``dataplane/client.py``), with what TensorRT-LLM does differently on the
wire:
- ``max_tokens`` is required (2048 when the client sets none, as SMG sends), the sampling knobs are
  optional fields of ``sampling_config`` (``num_return_sequences`` is ``n``, ``beam_width`` 1), ``seed`` is
  a uint64, structured outputs are ``guided_decoding{guide_type, guide}``; ``logit_bias`` has no sparse
  form on this wire (``embedding_bias`` is a dense vocabulary-sized array) and is refused with a 400.
- Stop strings stay on the gateway, as for the other engines.
- Choices are ``sequence_index``; logprobs come per token (``TokenLogprob`` with its alternatives, the
  chosen token among them: trimmed here to what the client asked for).
- ``HealthCheck`` answers a status string ("OK"); there is no ``GetLoads``.
- ``GetModelInfo`` names the model (``model_id``) but not its EOS ids or served name: EOS ids come from the
  tokenizer's ``generation_config.json``, as for a worker that reports none.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

from grpclib.exceptions import GRPCError, StreamTerminatedError
from smg_grpc_proto.generated import trtllm_service_pb2 as trt_pb

from dataplane.client import GrpcWorker
from dataplane.errors import UnsupportedParameter
from dataplane.types import (
    Chunk,
    Complete,
    EngineLoad,
    LogprobBlock,
    WireRequest,
    WorkerInfo,
    WorkerMessage,
)
from proto._gen import trtllm

_GENERATE = "/trtllm.TrtllmService/Generate"
_GENERATE_TYPES = (trt_pb.GenerateRequest, trt_pb.GenerateResponse)
DEFAULT_MAX_TOKENS = 2048  # the wire requires one; SMG's default for a request without
_GUIDE_TYPES = {
    "json_schema": trt_pb.GuidedDecodingParams.GUIDE_TYPE_JSON_SCHEMA,
    "regex": trt_pb.GuidedDecodingParams.GUIDE_TYPE_REGEX,
    "ebnf": trt_pb.GuidedDecodingParams.GUIDE_TYPE_EBNF_GRAMMAR,
    "structural_tag": trt_pb.GuidedDecodingParams.GUIDE_TYPE_STRUCTURAL_TAG,
}


class TrtllmClient(GrpcWorker):
    """A worker serving TensorRT-LLM's ``trtllm.TrtllmService``."""

    runtime = "trtllm"
    _KV_EVENTS_PATH = "/trtllm.TrtllmService/SubscribeKvEvents"
    _stub: trtllm.TrtllmServiceStub

    def __init__(self, host: str, port: int, api_key: str | None = None) -> None:
        super().__init__(host, port, api_key)
        self._stub = trtllm.TrtllmServiceStub(self._channel)

    def generate(self, request: WireRequest) -> AsyncGenerator[WorkerMessage, None]:
        top = request.sampling.top_logprobs

        def convert(reply: Any) -> WorkerMessage | None:
            kind = reply.WhichOneof("response")
            if kind == "chunk":
                chunk = reply.chunk
                return Chunk(
                    index=chunk.sequence_index,
                    token_ids=list(chunk.token_ids),
                    prompt_tokens=chunk.prompt_tokens,
                    completion_tokens=chunk.completion_tokens,
                    cached_tokens=chunk.cached_tokens,
                    logprobs=_logprobs(chunk.logprobs, top),
                )
            if kind == "complete":
                return _complete(reply.complete, top)
            return None

        return self._generate(_GENERATE, _GENERATE_TYPES, _encode(request), request, convert)

    async def abort(self, request_id: str, reason: str) -> bool:
        try:
            reply = await self._stub.abort(
                trtllm.AbortRequest(request_id=request_id), timeout=5, metadata=self._auth
            )
        except (TimeoutError, GRPCError, StreamTerminatedError, OSError):
            return False
        return reply.success

    @staticmethod
    def _healthy(reply: Any) -> bool:
        return bool(reply.status.strip().lower() == "ok")

    async def model_info(self, timeout: float) -> WorkerInfo:
        info = await self._model_info_reply(timeout)
        return WorkerInfo(
            served_model_name="",
            model_path=info.model_id,
            tokenizer_path="",
            max_context_length=info.max_seq_len or info.max_input_len,
            eos_token_ids=(),
            weight_version="default",
        )

    async def get_loads(self, timeout: float) -> EngineLoad | None:
        return None  # the service has no GetLoads


def _encode(request: WireRequest) -> Any:
    s = request.sampling
    if s.logit_bias:
        raise UnsupportedParameter(
            "'logit_bias' cannot reach TensorRT-LLM gRPC workers: their protocol takes a dense bias array"
        )
    config = trt_pb.SamplingConfig(beam_width=1, num_return_sequences=s.n)
    for field, value in (
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        ("min_p", s.min_p),
        ("repetition_penalty", s.repetition_penalty),
    ):
        if value is not None:
            setattr(config, field, value)
    if s.top_k is not None and s.top_k > 0:
        config.top_k = s.top_k
    if s.frequency_penalty:
        config.frequency_penalty = s.frequency_penalty
    if s.presence_penalty:
        config.presence_penalty = s.presence_penalty
    if s.min_tokens:
        config.min_tokens = s.min_tokens
    if s.seed is not None:
        config.seed = s.seed % 2**64  # uint64: a negative seed as its two's complement
    output = trt_pb.OutputConfig(exclude_input_from_output=True)
    if s.logprobs:
        output.logprobs = s.top_logprobs
    message = trt_pb.GenerateRequest(
        request_id=request.request_id,
        tokenized=trt_pb.TokenizedInput(
            original_text=request.original_text, input_token_ids=request.input_ids
        ),
        sampling_config=config,
        output_config=output,
        max_tokens=DEFAULT_MAX_TOKENS if s.max_tokens is None else s.max_tokens,
        streaming=request.stream,
        stop_token_ids=request.stop_token_ids,
        ignore_eos=s.ignore_eos,
    )
    if (constraint := request.constraint) is not None:
        message.guided_decoding.guide_type = _GUIDE_TYPES[constraint.kind]
        message.guided_decoding.guide = constraint.value
    return message


def _logprobs(tokens: Sequence[Any], top: int) -> LogprobBlock | None:
    """Per-token ``TokenLogprob``s as parallel arrays, at most ``top`` alternatives per token."""
    if not tokens:
        return None
    tops = [t.top_logprobs[:top] for t in tokens]
    return LogprobBlock(
        token_ids=[t.token_id for t in tokens],
        logprobs=[t.logprob for t in tokens],
        top=[([a.token_id for a in alts], [a.logprob for a in alts]) for alts in tops],
    )


def _complete(complete: Any, top: int) -> Complete:
    which = complete.WhichOneof("matched_stop")
    matched: int | str | None = None if which is None else getattr(complete, which)
    return Complete(
        index=complete.sequence_index,
        output_ids=list(complete.output_token_ids),
        finish_reason=complete.finish_reason or "stop",
        matched_stop=matched,
        prompt_tokens=complete.prompt_tokens,
        completion_tokens=complete.completion_tokens,
        cached_tokens=complete.cached_tokens,
        logprobs=_logprobs(complete.logprobs, top),
    )
