"""Tool-call and reasoning parsers: generated text in, typed deltas out. Standard library only.

    parser = make_tool_parser(tool_parser_name_for_model("Qwen/Qwen3-0.6B"), tools=request_tools)
    for piece in stream:
        delta = parser.feed(piece)        # ToolParse(normal_text, calls=[ToolCallDelta, ...])
    delta = parser.finish()

Every parser is per request and stateful; streaming output equals non-streaming output
(`parse_complete`) however the text is split.
"""

from parsers.registry import (
    REASONING_PARSER_NAMES,
    TOOL_PARSER_NAMES,
    make_reasoning_parser,
    make_tool_parser,
    reasoning_parser_name_for_model,
    tool_parser_name_for_model,
)
from parsers.types import (
    ReasoningDelta,
    ReasoningParser,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolParse,
    ToolParser,
    parse_complete,
)

__all__ = [
    "REASONING_PARSER_NAMES",
    "TOOL_PARSER_NAMES",
    "ReasoningDelta",
    "ReasoningParser",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolParse",
    "ToolParser",
    "make_reasoning_parser",
    "make_tool_parser",
    "parse_complete",
    "reasoning_parser_name_for_model",
    "tool_parser_name_for_model",
]
