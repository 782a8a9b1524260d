"""HTTP mode's detokenization: ids to text per choice, with string stops like an HTTP engine applies."""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class TextChoice:
    """One choice's text; holds back a tail that could still grow into a stop string."""

    def __init__(
        self, tokenizer: Tokenizer, finish_reason: str, matched_token_id: int | None, stops: list[str]
    ) -> None:
        self._tokenizer = tokenizer
        self._decoder = DecodeStream(skip_special_tokens=True)
        self._stops = stops
        self._planned = (finish_reason, matched_token_id)
        self._emitted = 0
        self.text = ""
        self.tokens = 0
        self.done = False
        self.finish_reason: str | None = None
        self.matched_stop: str | int | None = None

    def feed(self, ids: list[int]) -> str:
        """Text that became final with ``ids``; stops the choice if a stop string appeared."""
        for token in ids:
            if self.done:
                break
            self.tokens += 1
            piece = self._decoder.step(self._tokenizer, token)
            if piece:
                before = len(self.text)
                self.text += piece
                self._match_stop(before)
        return self._release()

    def finish(self) -> str:
        """The choice ended as planned (unless a stop string ended it first): flush the held-back text."""
        if not self.done:
            self.done = True
            self.finish_reason, matched = self._planned
            self.matched_stop = matched if self.finish_reason == "stop" else None
        return self._release()

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self.finish_reason = "abort"

    def _match_stop(self, before: int) -> None:
        for stop in self._stops:
            pos = self.text.find(stop, max(0, before - len(stop) + 1))
            if pos >= 0:
                self.text = self.text[:pos]
                self.done = True
                self.finish_reason = "stop"
                self.matched_stop = stop
                return

    def _release(self) -> str:
        end = len(self.text)
        if not self.done:
            end -= self._holdback()
        out = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return out

    def _holdback(self) -> int:
        text = self.text
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
