"""vLLM engine response messages for one planned request (and GetLoads), built directly as pb2 objects.

As vLLM's servicer sends them (DELTA output when streaming, FINAL_ONLY otherwise): no request id on the
responses; a chunk's ``completion_tokens`` counts its own tokens, not the running total; a streamed
``Complete`` repeats the last delta only (its ``completion_tokens`` that delta's length), an unstreamed one
holds the whole output and its total.
"""

from __future__ import annotations

from typing import Any

from smg_grpc_proto.generated import vllm_engine_pb2 as pb

from refworker.engine import Live, Plan
from refworker.grpc_loads import VERSION, reports_rank, scheduler_load_fields, timestamp
from refworker.loads import LoadFigures
from refworker.logprobs import input_logprobs, output_logprobs


class VllmResponseBuilder:
    """Builds the chunk and complete messages of one request; logprob work only when asked for.

    ``logprobs`` / ``prompt_logprobs``: ``sampling_params.logprobs`` / ``prompt_logprobs`` (None: unset),
    the number of top alternatives per token (0: the chosen tokens' logprobs only). ``eos_token_id``: the
    tokenizer's EOS, which vLLM does not report as a matched stop (its ``stop_reason`` stays None); any
    other stop token, from the request or the generation config, comes back as ``matched_token_id``.
    """

    __slots__ = (
        "_eos",
        "_kv_transfer_params",
        "_live",
        "_plan",
        "_prompt_top_n",
        "_top_n",
        "_vocab",
        "stream",
    )

    def __init__(
        self,
        plan: Plan,
        live: Live,
        *,
        stream: bool,
        logprobs: int | None,
        prompt_logprobs: int | None,
        vocab_size: int,
        eos_token_id: int,
        kv_transfer_params: str | None = None,
    ) -> None:
        self._kv_transfer_params = kv_transfer_params  # a PD prefill worker's, for the decode worker
        self._plan = plan
        self._live = live
        self.stream = stream
        self._top_n = logprobs
        self._prompt_top_n = prompt_logprobs
        self._vocab = vocab_size
        self._eos = eos_token_id

    def chunk(self, index: int, start: int, end: int) -> Any:
        plan = self._plan
        ids = plan.choices[index].ids
        # Filled in place: nested-message constructor arguments are copied, this is the hot path.
        response = pb.GenerateResponse()
        message = response.chunk
        message.token_ids.extend(ids[start:end])
        message.prompt_tokens = plan.prompt_tokens
        message.completion_tokens = end - start
        if cached := self._live.cached_tokens:
            message.cached_tokens = cached
        if index:
            message.index = index
        if self._top_n is not None:
            message.output_logprobs.CopyFrom(output_logprobs(pb, ids, start, end, self._top_n, self._vocab))
        if start == 0 and self._prompt_top_n is not None:  # the first chunk of its choice
            message.input_logprobs.CopyFrom(self._input(self._prompt_top_n))
        return response

    def complete(self, index: int, start: int, end: int) -> Any:
        """``output_ids`` are ``ids[start:end]``: the last delta when streaming, everything otherwise."""
        choice = self._plan.choices[index]
        message = self._complete(index, start, end, choice.finish_reason)
        matched = choice.matched_token_id
        if matched is not None and matched != self._eos:
            message.matched_token_id = matched
        if self._top_n is not None:
            message.output_logprobs.CopyFrom(
                output_logprobs(pb, choice.ids, start, end, self._top_n, self._vocab)
            )
        if self._kv_transfer_params is not None:
            message.kv_transfer_params_json = self._kv_transfer_params
        # vLLM hands the prompt's logprobs out once, with a choice's first output.
        if self._prompt_top_n is not None and (start == 0 or not self.stream):
            message.input_logprobs.CopyFrom(self._input(self._prompt_top_n))
        return pb.GenerateResponse(complete=message)

    def aborted(self, index: int, start: int, end: int) -> Any:
        return pb.GenerateResponse(complete=self._complete(index, start, end, "abort"))

    def _complete(self, index: int, start: int, end: int, finish_reason: str) -> Any:
        return pb.GenerateComplete(
            output_ids=self._plan.choices[index].ids[start:end],
            finish_reason=finish_reason,
            prompt_tokens=self._plan.prompt_tokens,
            completion_tokens=end - start,
            cached_tokens=self._live.cached_tokens,
            index=index,
        )

    def _input(self, top_n: int) -> Any:
        return input_logprobs(pb, self._plan.prompt_ids, 0, top_n, self._vocab)


def loads_response(load: LoadFigures, dp_rank: int | None) -> Any:
    """vLLM's ``GetLoadsResponse``: rank 0's ``SchedulerLoad`` (core fields only, as vLLM reports)."""
    response = pb.GetLoadsResponse(timestamp=timestamp(), version=VERSION, dp_rank_count=1)
    if reports_rank(dp_rank):
        response.loads.append(pb.SchedulerLoad(**scheduler_load_fields(load)))
    return response
