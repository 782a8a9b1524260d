"""SGLang scheduler response messages for one planned request, built directly as pb2 objects."""

from __future__ import annotations

from typing import Any

from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb

from refworker.engine import Live, Plan
from refworker.logprobs import fake_logprob as fake_logprob  # re-exported: e2e tests import it from here
from refworker.logprobs import input_logprobs, output_logprobs


class ResponseBuilder:
    """Builds the chunk and complete messages of one request; logprob work only when asked for."""

    __slots__ = (
        "_input_start",
        "_live",
        "_plan",
        "_prompt_ids",
        "_rid",
        "_top_n",
        "_vocab",
        "_with_logprobs",
        "stream",
    )

    def __init__(self, plan: Plan, live: Live, request: Any, vocab_size: int) -> None:
        self._plan = plan
        self._live = live
        self._rid = plan.request_id
        self.stream = bool(request.stream)
        self._with_logprobs = bool(request.return_logprob)
        self._top_n = max(int(request.top_logprobs_num), 0)
        self._input_start = int(request.logprob_start_len) if self._with_logprobs else -1
        self._prompt_ids = list(request.tokenized.input_ids) if self._input_start >= 0 else []
        self._vocab = vocab_size

    def chunk(self, index: int, start: int, end: int) -> Any:
        plan = self._plan
        ids = plan.choices[index].ids
        # Filled in place: nested-message constructor arguments are copied, this is the hot path.
        response = pb.GenerateResponse(request_id=self._rid)
        message = response.chunk
        message.token_ids.extend(ids[start:end])
        message.prompt_tokens = plan.prompt_tokens
        message.completion_tokens = end
        if cached := self._live.cached_tokens:
            message.cached_tokens = cached
        if index:
            message.index = index
        if self._with_logprobs:
            message.output_logprobs.CopyFrom(output_logprobs(pb, ids, start, end, self._top_n, self._vocab))
            if start == 0 and 0 <= self._input_start < len(self._prompt_ids):
                message.input_logprobs.CopyFrom(self._input())
        return response

    def complete(self, index: int, start: int, end: int) -> Any:
        """``output_ids`` are ``ids[start:end]``: the last delta when streaming, everything otherwise."""
        plan = self._plan
        choice = plan.choices[index]
        message = pb.GenerateComplete(
            output_ids=choice.ids[start:end],
            finish_reason=choice.finish_reason,
            prompt_tokens=plan.prompt_tokens,
            completion_tokens=end,
            cached_tokens=self._live.cached_tokens,
            index=index,
        )
        if choice.matched_token_id is not None:
            message.matched_token_id = choice.matched_token_id
        if self._with_logprobs:
            message.output_logprobs.CopyFrom(
                output_logprobs(pb, choice.ids, start, end, self._top_n, self._vocab)
            )
            # A stream had input logprobs on its first chunk; SGLang repeats them only when not streaming.
            if not self.stream and 0 <= self._input_start < len(self._prompt_ids):
                message.input_logprobs.CopyFrom(self._input())
        return pb.GenerateResponse(request_id=self._rid, complete=message)

    def aborted(self, index: int, start: int, end: int) -> Any:
        plan = self._plan
        message = pb.GenerateComplete(
            output_ids=plan.choices[index].ids[start:end],
            finish_reason="abort",
            prompt_tokens=plan.prompt_tokens,
            completion_tokens=end,
            cached_tokens=self._live.cached_tokens,
            index=index,
        )
        return pb.GenerateResponse(request_id=self._rid, complete=message)

    def _input(self) -> Any:
        return input_logprobs(pb, self._prompt_ids, self._input_start, self._top_n, self._vocab)
