"""From worker messages to events: a ``ChoiceState`` per choice index, a ``ResponseAssembler`` per request.

Per choice: token ids → stop tokens → incremental text → stop strings → events, then (when the request
asks for it) reasoning and tool-call parsing (``dataplane.parsing``). Streaming and
non-streaming take the same path; only which ids a ``Complete`` carries differs (deltas were already seen
when streaming; everything is in the ``Complete`` otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dataplane.detokenizer import TextStream
from dataplane.errors import WorkerStreamError
from dataplane.parsing import ParseSpec
from dataplane.tokenizer import ModelTokenizer
from dataplane.types import (
    Chunk,
    Complete,
    Event,
    Finished,
    FinishReason,
    LogprobBlock,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
    WorkerMessage,
)

_ENGINE_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort"}
_PRIME_TOKENS = 8


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """How one request's output is turned into text."""

    tokenizer: ModelTokenizer
    stop_token_ids: frozenset[int]
    stops: tuple[str, ...]
    include_stop: bool
    skip_special_tokens: bool
    prompt_ids: Sequence[int]
    logprobs: bool
    streaming: bool
    parsing: ParseSpec | None = None  # None: the text is the content, as decoded


class ChoiceState:
    """One choice index: its text stream, stop handling and finish state."""

    __slots__ = ("_spec", "_text", "completion_tokens", "cut_by_stop_string", "done", "index", "settled")

    def __init__(self, index: int, spec: OutputSpec) -> None:
        self.index = index
        self._spec = spec
        self._text = TextStream(
            spec.tokenizer.tokenizer,
            skip_special_tokens=spec.skip_special_tokens,
            prompt_ids=spec.prompt_ids[-_PRIME_TOKENS:],
            stops=spec.stops,
            include_stop=spec.include_stop,
        )
        self.done = False  # no more output for this choice
        self.settled = False  # and the worker needs nothing more either (it completed, or we cut it off)
        self.cut_by_stop_string = False  # the worker generated past the end the client sees
        self.completion_tokens = 0  # tokens up to and including the one that ended the choice

    def on_tokens(self, ids: Sequence[int], logprobs: LogprobBlock | None) -> list[Event]:
        if self.done or not ids:
            return []
        cut = _first_stop(ids, self._spec.stop_token_ids)
        kept = ids if cut is None else ids[:cut]
        text, used = self._push(kept)
        self.completion_tokens += used if self._text.stopped or cut is None else used + 1
        events: list[Event] = []
        if text or (logprobs is not None and self._spec.logprobs):
            events.append(self._delta(text, logprobs, used))
        if self._text.stopped:
            self.settled = self.cut_by_stop_string = True  # the worker does not know about stop strings
            events.append(self._finish("stop", self._text.matched_stop))
        elif cut is not None:
            if tail := self._text.flush():
                events.append(TextDelta(self.index, tail))
            events.append(self._finish("stop", ids[cut]))
        return events

    def _push(self, ids: Sequence[int]) -> tuple[str, int]:
        """Decode ``ids``; with stop strings, one at a time so the token that completes a stop is known."""
        try:
            if not self._spec.stops:
                return self._text.push(ids), len(ids)
            pieces = []
            for used, token in enumerate(ids, 1):
                pieces.append(self._text.push((token,)))
                if self._text.stopped:
                    return "".join(pieces), used
            return "".join(pieces), len(ids)
        except ValueError as exc:  # an id outside the vocabulary: the worker and tokenizer disagree
            raise WorkerStreamError(f"worker sent an undecodable token: {exc}", status=502) from exc

    def on_complete(self, complete: Complete) -> list[Event]:
        events = [] if self._spec.streaming else self.on_tokens(complete.output_ids, complete.logprobs)
        self.settled = True
        if self.done:
            return events
        tail = self._text.flush()
        if tail:
            events.append(TextDelta(self.index, tail))
        reason = _ENGINE_REASONS.get(complete.finish_reason, "stop")
        events.append(self._finish(reason, complete.matched_stop))
        return events

    def _delta(self, text: str, block: LogprobBlock | None, count: int) -> TextDelta:
        if block is None or not self._spec.logprobs:
            return TextDelta(self.index, text)
        return TextDelta(self.index, text, _token_logprobs(self._spec.tokenizer, block, count))

    def _finish(self, reason: FinishReason, matched: int | str | None) -> Finished:
        self.done = True
        return Finished(self.index, reason, matched)


class ResponseAssembler:
    """All choices of one request, plus the usage the worker reports."""

    def __init__(self, spec: OutputSpec, n: int) -> None:
        self._choices = [ChoiceState(i, spec) for i in range(n)]
        self._parsers = None if spec.parsing is None else [spec.parsing.choice(i) for i in range(n)]
        self._prompt_tokens = len(spec.prompt_ids)
        self._cached_tokens = 0
        self._reasoning_tokens = 0
        self._reported_completion: dict[int, int] = {}
        self._cut = False  # some choice was ended by a stop string

    def feed(self, message: WorkerMessage) -> list[Event]:
        choice = self._choice(message.index)
        if isinstance(message, Chunk):
            self._cached_tokens = max(self._cached_tokens, message.cached_tokens)
            events = choice.on_tokens(message.token_ids, message.logprobs)
        else:
            self._prompt_tokens = message.prompt_tokens or self._prompt_tokens
            self._cached_tokens = max(self._cached_tokens, message.cached_tokens)
            self._reasoning_tokens += message.reasoning_tokens
            self._reported_completion[message.index] = message.completion_tokens
            events = choice.on_complete(message)
        if choice.cut_by_stop_string:
            self._cut = True
        if self._parsers is None or not events:
            return events
        return self._parsers[message.index].process(events)

    @property
    def cut_short(self) -> bool:
        """Every choice is finished, some by a stop string the worker knows nothing of: stop reading."""
        return self._cut and all(c.settled for c in self._choices)

    def finish(self) -> list[Event]:
        """End of the worker stream: every choice must have finished."""
        missing = [c.index for c in self._choices if not c.done]
        if missing:
            raise WorkerStreamError(f"worker stream ended before choices {missing} completed", status=502)
        # The worker's count, except where a stop string ended the choice before the worker did.
        completion = sum(
            c.completion_tokens
            if c.cut_by_stop_string
            else self._reported_completion.get(c.index) or c.completion_tokens
            for c in self._choices
        )
        return [Usage(self._prompt_tokens, completion, self._cached_tokens, self._reasoning_tokens)]

    def _choice(self, index: int) -> ChoiceState:
        if not 0 <= index < len(self._choices):
            raise WorkerStreamError(
                f"worker sent choice index {index} for n={len(self._choices)}", status=502
            )
        return self._choices[index]


def _first_stop(ids: Sequence[int], stop_ids: frozenset[int]) -> int | None:
    if stop_ids.isdisjoint(ids):
        return None
    return next(i for i, t in enumerate(ids) if t in stop_ids)


def _token_logprobs(tok: ModelTokenizer, block: LogprobBlock, count: int) -> tuple[TokenLogprob, ...]:
    out = []
    for pos, (token_id, logprob) in enumerate(zip(block.token_ids[:count], block.logprobs, strict=False)):
        top_ids, top_values = block.top[pos] if pos < len(block.top) else ([], [])
        top = tuple(TopLogprob(*_token_text(tok, i), v) for i, v in zip(top_ids, top_values, strict=False))
        text, token_id, raw = _token_text(tok, token_id)
        out.append(TokenLogprob(text, token_id, logprob, top, raw))
    return tuple(out)


def _token_text(tok: ModelTokenizer, token_id: int) -> tuple[str, int, bytes]:
    raw = tok.token_bytes(token_id)
    return raw.decode(errors="replace"), token_id, raw
