"""`passthrough`: no tool-call parsing; every character is normal text."""

from __future__ import annotations

from collections.abc import Iterable

from parsers.types import Tool, ToolParse


class PassthroughParser:
    def __init__(self, tools: Iterable[Tool] | None = None) -> None:
        pass

    def feed(self, text: str) -> ToolParse:
        return ToolParse(text)

    def finish(self) -> ToolParse:
        return ToolParse()
