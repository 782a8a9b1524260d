"""A worker serving vLLM's gRPC engine service (``python -m vllm.entrypoints.grpc_server``).

Same shape as ``SglangClient`` (``dataplane/client.py``), with what vLLM does differently on the wire:
- Sampling: ``temperature`` and ``max_tokens`` are optional (unset: the engine's default), ``top_k`` 0 is
  "off" (SGLang: −1), ``seed`` exists (int32, clamped as SMG does), ``logit_bias`` keys are token ids,
  ``logprobs`` is the number of alternatives per token, structured outputs name EBNF ``grammar``.
- Stop strings stay on the gateway, as for SGLang: the pipeline matches them (hidden, across chunks) and
  sends single-token stops as ``stop_token_ids``, so the engine never needs to detokenize.
- Streamed chunks report ``completion_tokens`` as the delta's length and the final ``Complete`` repeats
  the last delta: the running total is kept here, so ``Chunk``/``Complete`` mean what they mean for
  SGLang (``completion_tokens`` counts everything generated so far).
- ``Abort`` takes a list of request ids and answers nothing; ``GetModelInfo`` has no weight version.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from grpclib.exceptions import GRPCError, StreamTerminatedError
from smg_grpc_proto.generated import vllm_engine_pb2 as vllm_pb

from dataplane.client import GrpcWorker, logprob_block, summed_loads
from dataplane.errors import InvalidRequest
from dataplane.types import (
    Chunk,
    Complete,
    EngineLoad,
    LogprobBlock,
    WireRequest,
    WorkerMessage,
)
from proto._gen.vllm.grpc import engine as vllm

_GENERATE = "/vllm.grpc.engine.VllmEngine/Generate"
_GENERATE_TYPES = (vllm_pb.GenerateRequest, vllm_pb.GenerateResponse)
_INT32 = (-(2**31), 2**31 - 1)
# SamplingParams' `constraint` oneof, by constraint kind.
_CONSTRAINT_FIELDS = {
    "json_schema": "json_schema",
    "regex": "regex",
    "ebnf": "grammar",
    "structural_tag": "structural_tag",
}


class VllmClient(GrpcWorker):
    """A worker serving vLLM's ``vllm.grpc.engine.VllmEngine`` service."""

    runtime = "vllm"
    _KV_EVENTS_PATH = "/vllm.grpc.engine.VllmEngine/SubscribeKvEvents"
    _stub: vllm.VllmEngineStub

    def __init__(self, host: str, port: int, api_key: str | None = None) -> None:
        super().__init__(host, port, api_key)
        self._stub = vllm.VllmEngineStub(self._channel)

    def generate(self, request: WireRequest) -> AsyncGenerator[WorkerMessage, None]:
        top = request.sampling.top_logprobs
        totals: dict[int, int] = {}  # tokens streamed so far, per choice index

        def convert(reply: Any) -> WorkerMessage | None:
            kind = reply.WhichOneof("response")
            if kind == "chunk":
                chunk = reply.chunk
                index = chunk.index
                total = totals[index] = totals.get(index, 0) + len(chunk.token_ids)
                return Chunk(
                    index=index,
                    token_ids=list(chunk.token_ids),
                    prompt_tokens=chunk.prompt_tokens,
                    completion_tokens=total,
                    cached_tokens=chunk.cached_tokens,
                    logprobs=_logprobs(chunk, top),
                )
            if kind == "complete":
                return _complete(reply.complete, totals.get(reply.complete.index), top)
            return None

        return self._generate(_GENERATE, _GENERATE_TYPES, _encode(request), request, convert)

    async def flush_cache(self, timeout: float) -> None:
        await self._flush_cache(timeout)

    async def abort(self, request_id: str, reason: str) -> bool:
        try:
            await self._stub.abort(
                vllm.AbortRequest(request_ids=[request_id]), timeout=5, metadata=self._auth
            )
        except (TimeoutError, GRPCError, StreamTerminatedError, OSError):
            return False
        return True

    async def get_loads(self, timeout: float) -> EngineLoad | None:
        reply = await self._loads_reply(vllm.GetLoadsRequest(include=["core"]), timeout)
        if reply is None:
            return None
        return summed_loads(reply.loads) if reply.loads else EngineLoad(0, 0, 0.0)


def _encode(request: WireRequest) -> Any:
    s = request.sampling
    params = vllm_pb.SamplingParams(
        top_p=1.0 if s.top_p is None else s.top_p,
        top_k=s.top_k if s.top_k is not None and s.top_k > 0 else 0,
        min_p=s.min_p or 0.0,
        frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
        repetition_penalty=1.0 if s.repetition_penalty is None else s.repetition_penalty,
        min_tokens=s.min_tokens,
        stop_token_ids=request.stop_token_ids,
        skip_special_tokens=True,
        spaces_between_special_tokens=True,
        ignore_eos=s.ignore_eos,
        n=s.n,
        logit_bias=_logit_bias(s.logit_bias),
    )
    if s.temperature is not None:
        params.temperature = s.temperature
    if s.max_tokens is not None:
        params.max_tokens = s.max_tokens
    if s.seed is not None:
        params.seed = min(max(s.seed, _INT32[0]), _INT32[1])
    if s.logprobs:
        params.logprobs = s.top_logprobs
    if (constraint := request.constraint) is not None:
        setattr(params, _CONSTRAINT_FIELDS[constraint.kind], constraint.value)
    message = vllm_pb.GenerateRequest(
        request_id=request.request_id,
        tokenized=vllm_pb.TokenizedInput(original_text=request.original_text, input_ids=request.input_ids),
        sampling_params=params,
        stream=request.stream,
    )
    if request.kv_transfer_params is not None:
        message.kv_transfer_params_json = request.kv_transfer_params
    return message


def _logit_bias(bias: Mapping[str, float]) -> dict[int, float]:
    """Token id keys (the wire's are int32)."""
    out = {int(token): value for token, value in bias.items()}
    if any(token > _INT32[1] for token in out):
        raise InvalidRequest("'logit_bias' names a token id beyond any vocabulary", param="logit_bias")
    return out


def _logprobs(message: Any, top: int) -> LogprobBlock | None:
    """The message's logprobs with at most ``top`` alternatives per token (vLLM may send one more: the
    sampled token beside the best ones)."""
    if not message.HasField("output_logprobs"):
        return None
    block = logprob_block(message.output_logprobs)
    if block is not None and any(len(ids) > top for ids, _ in block.top):
        block = LogprobBlock(block.token_ids, block.logprobs, [(i[:top], v[:top]) for i, v in block.top])
    return block


def _complete(complete: Any, streamed: int | None, top: int) -> Complete:
    """``streamed``: the tokens the choice's chunks carried (its total), ``None`` when not streaming."""
    which = complete.WhichOneof("matched_stop")
    matched: int | str | None = None if which is None else getattr(complete, which)
    return Complete(
        index=complete.index,
        output_ids=list(complete.output_ids),
        finish_reason=complete.finish_reason or "stop",
        matched_stop=matched,
        prompt_tokens=complete.prompt_tokens,
        completion_tokens=len(complete.output_ids) if streamed is None else streamed,
        cached_tokens=complete.cached_tokens,
        logprobs=_logprobs(complete, top),
        kv_transfer_params=(
            complete.kv_transfer_params_json if complete.HasField("kv_transfer_params_json") else None
        ),
    )
