"""Streamed token ids → streamed text: incremental detokenization and stop strings.

Token ids arrive from a worker a few at a time. What the client sees, concatenated, must be exactly what a
one-shot ``tokenizer.decode`` of all the ids gives — no U+FFFD for a character whose UTF-8 bytes are split
across tokens, nothing dropped or duplicated — and a stop string must be found even when it straddles two
chunks or two tokens.

- ``IncrementalDetokenizer``: ids → newly final text.
- ``StopMatcher``: text → text that can no longer become part of a stop string.
- ``TextStream``: both, as one per-choice object.

Each is a plain synchronous state machine: no I/O, no locks, one instance per output choice.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from tokenizers import Tokenizer, decoders

__all__ = ["IncrementalDetokenizer", "StopMatcher", "TextStream"]

_REPLACEMENT = "\ufffd"
# vLLM primes with the prompt's last 5 tokens: enough for any decoder's left context in practice.
_PRIME_TOKENS = 5
# Pending tokens that still end in U+FFFD after this many can only be a garbage byte stream; re-anchor the
# window so that a model spewing invalid bytes cannot make every push decode an ever-growing window.
_RESYNC_PENDING = 32
_RESYNC_CANDIDATES = 8


class IncrementalDetokenizer:
    """Exact incremental decoding of a stream of token ids.

    Invariant: for any ids and any way of splitting them into ``push`` calls,
    ``"".join(pushes) + flush() == tokenizer.decode(ids, skip_special_tokens)`` (``tokenizers``' decode:
    transformers' ``clean_up_tokenization_spaces`` is not applied). It holds whenever appending tokens never
    rewrites text decoded earlier, as with ByteLevel and Metaspace. One known exception: ByteFallback
    (Llama 2, Mistral) turns a whole run of ``<0xNN>`` tokens into U+FFFDs when any byte of it is invalid,
    so a character already sent (``你``) becomes U+FFFD in the full decode if invalid bytes follow it in the
    same run; the stream keeps ``你``. Text already sent cannot be taken back; the stream goes on, exact
    again from the next character.

    Algorithm: the prefix/read-offset scheme of vLLM and TGI (``decode_token``). The window holds a few
    already-emitted "context" tokens followed by the pending ones; each push decodes the window and emits
    what lies beyond the context's text. While the decoded window ends in U+FFFD (a character still
    incomplete), only the text before that trailing run is emitted and the tokens stay pending. ByteLevel
    decoders (GPT-2 family: Qwen, Llama 3, DeepSeek) need no context at all — bytes are concatenated, then
    decoded as UTF-8, so decoding restarts cleanly at any character boundary — and take a one-decode path.
    """

    __slots__ = (
        "_context_free",
        "_emitted",
        "_limit",
        "_read",
        "_resync_at",
        "_skip",
        "_tokenizer",
        "_window",
    )

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        skip_special_tokens: bool = True,
        prompt_ids: Sequence[int] = (),
    ) -> None:
        """Start a stream.

        ``prompt_ids``: the prompt's ids (only the last few are used, and checked like pushed ids). They give
        a context-sensitive decoder its left context, so that the first output token decodes as in a full
        decode (Metaspace's leading space). Prompt text is never emitted.
        """
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._limit = _id_limit(tokenizer)
        self._context_free = isinstance(tokenizer.decoder, decoders.ByteLevel)
        self._window: list[int] = []  # context tokens, then pending tokens
        self._read = 0  # number of context tokens at the start of the window
        self._emitted = 0  # characters of decode(window) already emitted or belonging to the context
        self._resync_at = _RESYNC_PENDING
        if prompt_ids:
            tail = list(prompt_ids[-_PRIME_TOKENS:])
            self._check(tail)
            if not self._context_free:
                self._prime(tail)

    def push(self, token_ids: Sequence[int]) -> str:
        """Feed new ids (any number); return the text they made final, possibly ``""``.

        Raises ``ValueError`` naming the first id the tokenizer does not know; the stream is unchanged.
        """
        if not token_ids:
            return ""
        self._check(token_ids)
        window = self._window
        window.extend(token_ids)
        text = self._tokenizer.decode(window, self._skip)
        if text.endswith(_REPLACEMENT):
            return self._hold(text)
        if len(text) > self._emitted:
            new = text[self._emitted :]
            self._advance()
            return new
        # Nothing visible (e.g. skipped special tokens): keep the context, but bound the window.
        if len(window) - self._read >= self._resync_at:
            self._shrink()
        return ""

    def flush(self) -> str:
        """End of stream: emit whatever is still held and reset.

        A trailing byte sequence that never completed becomes U+FFFD here, exactly as in a full decode.
        """
        window = self._window
        tail = ""
        if len(window) > self._read:
            tail = self._tokenizer.decode(window, self._skip)[self._emitted :]
        self._window = []
        self._read = self._emitted = 0
        self._resync_at = _RESYNC_PENDING
        return tail

    def _check(self, token_ids: Sequence[int]) -> None:
        # tokenizers silently drops unknown ids (and raises OverflowError/TypeError on negative ones):
        # neither tells the caller which id was bad.
        limit = self._limit
        if len(token_ids) == 1:
            if 0 <= token_ids[0] < limit:
                return
        elif min(token_ids) >= 0 and max(token_ids) < limit:
            return
        bad = next(tid for tid in token_ids if not 0 <= tid < limit)
        raise ValueError(f"token id {bad} is out of range for this tokenizer (valid ids: 0..{limit - 1})")

    def _prime(self, tail: list[int]) -> None:
        # A prompt ending inside a character must not lend its bytes to the output: the output is then
        # decoded as on its own, like tokenizer.decode(output_ids).
        while tail:
            text = self._tokenizer.decode(tail, self._skip)
            if not text.endswith(_REPLACEMENT):
                self._window = tail
                self._read = len(tail)
                self._emitted = len(text)
                return
            tail.pop()

    def _advance(self) -> None:
        # Called at a clean boundary (the decoded window does not end inside a character).
        if self._context_free:
            self._window = []
            self._emitted = 0
        else:
            context = self._window[self._read :]
            self._window = context
            self._read = len(context)
            self._emitted = len(self._tokenizer.decode(context, self._skip))
        self._resync_at = _RESYNC_PENDING

    def _shrink(self) -> None:
        if self._context_free:
            self._advance()  # the decoded window does not end inside a character: a clean boundary
            return
        # Moving the context onto invisible tokens would cost Metaspace its leading space; instead drop the
        # skipped special tokens, which decode() filters out before the decoder runs anyway.
        if self._skip:
            added = self._tokenizer.get_added_tokens_decoder()
            pending = [tid for tid in self._window[self._read :] if not (tid in added and added[tid].special)]
            self._window[self._read :] = pending
        if len(self._window) - self._read >= self._resync_at:
            self._resync_at *= 2  # nothing to drop: look again after twice as many tokens

    def _hold(self, text: str) -> str:
        # Everything before the trailing U+FFFD run is final: later bytes can only change how the last,
        # incomplete sequence decodes.
        cut = len(text.rstrip(_REPLACEMENT))
        out = ""
        if cut > self._emitted:
            out = text[self._emitted : cut]
            self._emitted = cut
        if len(self._window) - self._read >= self._resync_at:
            out += self._resync(text)
        return out

    def _resync(self, text: str) -> str:
        """Restart the window at a recent token boundary that provably splits the decode in two."""
        window, decode, skip = self._window, self._tokenizer.decode, self._skip
        lowest = max(self._read + 1, len(window) - _RESYNC_CANDIDATES)
        for k in range(len(window) - 1, lowest - 1, -1):
            tail = decode(window[k:], skip)
            head_len = len(text) - len(tail)
            # Lossy UTF-8 (ByteLevel): if the split decodes like the whole now, the tail's first byte does
            # not continue a sequence from the head, and never will. ByteFallback replaces a whole invalid
            # run of byte tokens, so there the tail must also start with a complete character.
            clean = self._context_free or not tail.startswith(_REPLACEMENT)
            if tail and clean and text.endswith(tail) and decode(window[:k], skip) == text[:head_len]:
                out = text[self._emitted : head_len] if head_len > self._emitted else ""
                self._emitted = max(0, self._emitted - head_len)
                self._window = window[k:]
                self._read = 0
                self._resync_at = _RESYNC_PENDING
                return out
        self._resync_at *= 2  # amortised: no split found, try again after twice as many tokens
        return ""


@functools.lru_cache(maxsize=64)  # reading the added tokens costs more than decoding a whole chunk
def _id_limit(tokenizer: Tokenizer) -> int:
    # get_vocab_size counts added tokens; their ids may lie beyond that count when some of them duplicate
    # model tokens, so also take the highest added id. Holes below the limit are dropped by decode() alike.
    added = tokenizer.get_added_tokens_decoder()
    return max(tokenizer.get_vocab_size(with_added_tokens=True), max(added, default=-1) + 1)


class StopMatcher:
    """Stop strings over streamed text, matched across chunk boundaries.

    Rule when several stops could match: the match that ENDS first in the text wins (it is the first one
    a non-streaming reader would complete); among matches ending at the same place, the longest. With
    stops ``["abc", "b"]`` on ``"abc"``, ``"b"`` wins and the output is ``"a"``.

    Invariant: for any text and any split into pushes, the concatenated output equals ``text[:idx]``
    (``text[:idx + len(stop)]`` with ``include_stop``) for the winning match at ``idx``, or ``text`` when
    nothing matches. Only the shortest tail that could still begin a stop is held back (at most the
    longest stop's length minus one), and each push searches only that tail plus the new text.
    """

    __slots__ = ("_buf", "_heads", "_hold_max", "_include", "_prefixes", "_stops", "matched", "stopped")

    def __init__(self, stops: Sequence[str], *, include_stop: bool = False) -> None:
        """``stops``: the stop strings (empty ones ignored, duplicates fine)."""
        # Longest first, so that the strict "ends earlier" comparison in push keeps the longest on a tie.
        self._stops = tuple(sorted({s for s in stops if s}, key=len, reverse=True))
        self._include = include_stop
        self._hold_max = len(self._stops[0]) - 1 if self._stops else 0
        self._prefixes = frozenset(s[:n] for s in self._stops for n in range(1, len(s)))
        self._heads = frozenset(p[0] for p in self._prefixes)
        self._buf = ""
        self.matched: str | None = None
        """The stop string that ended the text, once one has."""
        self.stopped = False
        """True once a stop matched; every later push returns ``""``."""

    def push(self, text: str) -> str:
        """Feed streamed text; return the part that is safe to emit now."""
        if not self._stops:
            return text
        if self.stopped or not text:
            return ""
        window = self._buf + text
        best: str | None = None
        best_end = 0
        for stop in self._stops:
            # The held-back tail holds no complete stop, so any match ends in the new text; the first
            # occurrence of a stop is also the one that ends first.
            at = window.find(stop)
            if at >= 0 and (best is None or at + len(stop) < best_end):
                best, best_end = stop, at + len(stop)
        if best is not None:
            self.stopped = True
            self.matched = best
            self._buf = ""
            return window[: best_end if self._include else best_end - len(best)]
        n = len(window)
        cut = n
        heads, prefixes = self._heads, self._prefixes
        for i in range(max(0, n - self._hold_max), n):
            if window[i] in heads and window[i:] in prefixes:
                cut = i
                break
        self._buf = window[cut:]
        return window[:cut]

    def flush(self) -> str:
        """End of stream without a match: release the held-back text."""
        held, self._buf = self._buf, ""
        return "" if self.stopped else held


class TextStream:
    """Per-choice text pipeline: token ids → exact text → cut at the first stop string.

    Once a stop has matched, pushes return ``""`` without decoding; the caller ends the choice with
    ``matched_stop`` and aborts the worker stream.
    """

    __slots__ = ("_detokenizer", "_matcher")

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        stops: Sequence[str] = (),
        include_stop: bool = False,
        skip_special_tokens: bool = True,
        prompt_ids: Sequence[int] = (),
    ) -> None:
        """See ``IncrementalDetokenizer`` and ``StopMatcher`` for the parameters."""
        self._detokenizer = IncrementalDetokenizer(
            tokenizer, skip_special_tokens=skip_special_tokens, prompt_ids=prompt_ids
        )
        self._matcher = StopMatcher(stops, include_stop=include_stop)

    @property
    def matched_stop(self) -> str | None:
        """The stop string that ended the text, if any."""
        return self._matcher.matched

    @property
    def stopped(self) -> bool:
        """True once a stop string matched: the choice is finished."""
        return self._matcher.stopped

    def push(self, token_ids: Sequence[int]) -> str:
        """Feed new token ids; return the text safe to send now (``ValueError`` on an unknown id)."""
        if self._matcher.stopped:
            return ""
        text = self._detokenizer.push(token_ids)
        return self._matcher.push(text) if text else ""

    def flush(self) -> str:
        """End of stream: the remaining text, still cut at a stop string it may complete."""
        if self._matcher.stopped:
            return ""
        text = self._matcher.push(self._detokenizer.flush())
        return text + self._matcher.flush()
