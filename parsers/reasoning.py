"""Reasoning parsers: split generated text into reasoning and normal text at `<think>`-style markers.

One reasoning block per output: text before the start marker is normal text, text between the markers
is reasoning, everything after the end marker is normal text (a later start marker included). A parser
that starts in reasoning (the chat template already opened the block, or the model always thinks)
treats text as reasoning until the end marker and drops a start marker the model repeats at the very
beginning. With no end marker, all of it is reasoning. Only a possible partial marker is held back.

`separate_reasoning=False` is the caller's concern: as in SMG, the caller then runs no reasoning parser
(use `passthrough`), so the reasoning stays in the content with its markers; tool calls are parsed from
the normal text only when reasoning is separated.
"""

from __future__ import annotations

from dataclasses import dataclass

from parsers.tools.grammar import partial_suffix
from parsers.types import ReasoningDelta

_BEFORE, _OPENING, _INSIDE, _AFTER = range(4)


@dataclass(frozen=True, slots=True)
class ThinkFormat:
    """A model family's reasoning markers and whether its output starts inside reasoning by default."""

    start: str = "<think>"
    end: str = "</think>"
    starts_in_reasoning: bool = False


class ThinkParser:
    """Splits a stream at one start/end marker pair; see the module docstring for the rules."""

    def __init__(self, fmt: ThinkFormat, starts_in_reasoning: bool | None = None) -> None:
        self.start_marker, self.end_marker = fmt.start, fmt.end
        inside = fmt.starts_in_reasoning if starts_in_reasoning is None else starts_in_reasoning
        self._phase = _OPENING if inside else _BEFORE
        self._buf = ""

    @property
    def in_reasoning(self) -> bool:
        return self._phase in (_OPENING, _INSIDE)

    def feed(self, text: str) -> ReasoningDelta:
        self._buf += text
        return self._run(final=False)

    def finish(self) -> ReasoningDelta:
        return self._run(final=True)

    def _run(self, final: bool) -> ReasoningDelta:
        reasoning: list[str] = []
        normal: list[str] = []
        buf, start, end = self._buf, self.start_marker, self.end_marker
        while buf:
            if self._phase == _OPENING:
                if buf.startswith(start):
                    buf = buf[len(start) :]
                elif start.startswith(buf) and not final:
                    break
                self._phase = _INSIDE
            elif self._phase == _AFTER:
                normal.append(buf)
                buf = ""
            else:
                marker, out = (start, normal) if self._phase == _BEFORE else (end, reasoning)
                k = buf.find(marker)
                if k >= 0:
                    out.append(buf[:k])
                    buf = buf[k + len(marker) :]
                    self._phase = _INSIDE if self._phase == _BEFORE else _AFTER
                    continue
                keep = 0 if final else partial_suffix(buf, marker)
                out.append(buf[: len(buf) - keep])
                buf = buf[len(buf) - keep :]
                break
        self._buf = buf
        return ReasoningDelta("".join(reasoning), "".join(normal))


class PassthroughReasoning:
    """`passthrough`: no reasoning; every character is normal text."""

    def __init__(self, starts_in_reasoning: bool | None = None) -> None:
        pass

    @property
    def in_reasoning(self) -> bool:
        return False

    def feed(self, text: str) -> ReasoningDelta:
        return ReasoningDelta("", text)

    def finish(self) -> ReasoningDelta:
        return ReasoningDelta("", "")


_THINK = "<think>", "</think>"

# Parser name -> markers and default; SMG's reasoning_parser crate (smg-behavior.md §8).
REASONING_FORMATS: dict[str, ThinkFormat] = {
    "deepseek_r1": ThinkFormat(*_THINK, starts_in_reasoning=True),
    "deepseek_v31": ThinkFormat(*_THINK),
    "qwen3": ThinkFormat(*_THINK),
    "qwen3_thinking": ThinkFormat(*_THINK, starts_in_reasoning=True),
    "glm45": ThinkFormat(*_THINK),
    "kimi": ThinkFormat("◁think▷", "◁/think▷"),
    "kimi_thinking": ThinkFormat(*_THINK, starts_in_reasoning=True),
    "kimi_k25": ThinkFormat(*_THINK),
    "step3": ThinkFormat(*_THINK, starts_in_reasoning=True),
    "minimax": ThinkFormat(*_THINK, starts_in_reasoning=True),
    "cohere_cmd": ThinkFormat("<|START_THINKING|>", "<|END_THINKING|>"),
    "nano_v3": ThinkFormat(*_THINK),
}
