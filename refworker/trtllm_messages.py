"""TensorRT-LLM response messages for one planned request, built directly as pb2 objects.

As TensorRT-LLM's servicer (``tensorrt_llm/grpc/smg/servicer.py``) sends them: every response echoes the
request id; a chunk holds the new tokens (``sequence_index``: the choice) but counts every token of its
choice so far in ``completion_tokens``; a ``Complete`` holds all of its choice's tokens and their total,
streamed or not (after the last delta's chunk when streaming). Logprobs are a ``TokenLogprob`` per token.
"""

from __future__ import annotations

from typing import Any

from smg_grpc_proto.generated import trtllm_service_pb2 as pb

from refworker.engine import Live, Plan
from refworker.logprobs import token_logprobs


class TrtllmResponseBuilder:
    """Builds the chunk and complete messages of one request; logprob work only when asked for.

    ``logprobs``: ``output_config.logprobs`` (None: unset), the top alternatives per token besides the
    chosen one. ``eos_token_id``: the tokenizer's EOS, TensorRT-LLM's ``end_id``, which ends a choice without
    a ``stop_reason``; any other stop token, from the request or the generation config (TensorRT-LLM makes
    those stop words), comes back as ``matched_token_id``.
    """

    __slots__ = ("_eos", "_live", "_plan", "_rid", "_top_n", "_vocab", "stream")

    def __init__(
        self,
        plan: Plan,
        live: Live,
        *,
        stream: bool,
        logprobs: int | None,
        vocab_size: int,
        eos_token_id: int,
    ) -> None:
        self._plan = plan
        self._live = live
        self._rid = plan.request_id
        self.stream = stream
        self._top_n = logprobs
        self._vocab = vocab_size
        self._eos = eos_token_id

    def chunk(self, index: int, start: int, end: int) -> Any:
        plan = self._plan
        ids = plan.choices[index].ids
        # Filled in place: nested-message constructor arguments are copied, this is the hot path.
        response = pb.GenerateResponse(request_id=self._rid)
        message = response.chunk
        message.token_ids.extend(ids[start:end])
        if index:
            message.sequence_index = index
        message.prompt_tokens = plan.prompt_tokens
        message.completion_tokens = end
        if cached := self._live.cached_tokens:
            message.cached_tokens = cached
        if self._top_n is not None:
            message.logprobs.extend(token_logprobs(pb, ids, start, end, self._top_n, self._vocab))
        return response

    def complete(self, index: int, start: int, end: int) -> Any:
        """All of the choice's tokens, ``ids[:end]``, whether streaming (``start``: the last delta) or not."""
        choice = self._plan.choices[index]
        response = self._complete(index, end, choice.finish_reason)
        matched = choice.matched_token_id
        if matched is not None and matched != self._eos:
            response.complete.matched_token_id = matched
        return response

    def aborted(self, index: int, start: int, end: int) -> Any:
        return self._complete(index, end, "abort")

    def _complete(self, index: int, end: int, finish_reason: str) -> Any:
        plan = self._plan
        ids = plan.choices[index].ids
        response = pb.GenerateResponse(request_id=self._rid)
        message = response.complete
        message.finish_reason = finish_reason  # never empty: this also selects the `complete` member
        message.output_token_ids.extend(ids[:end])
        if index:
            message.sequence_index = index
        message.prompt_tokens = plan.prompt_tokens
        message.completion_tokens = end
        if cached := self._live.cached_tokens:
            message.cached_tokens = cached
        if self._top_n is not None:
            message.logprobs.extend(token_logprobs(pb, ids, 0, end, self._top_n, self._vocab))
        return response
