"""Tools for the tool-calling tests, and how a client puts streamed ``delta.tool_calls`` together."""

from __future__ import annotations

import re
from typing import Any

CALL_ID = re.compile(r"call_[0-9a-f]{24}")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius"]}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}


def streamed_calls(chunks: list[Any]) -> list[dict[str, Any]]:
    """Accumulate ``delta.tool_calls`` as a client does: by index, the name once, arguments appended."""
    calls: dict[int, dict[str, Any]] = {}
    for ch in chunks:
        for c in ch.choices:
            for d in c.delta.tool_calls or ():
                call = calls.setdefault(d.index, {"id": None, "name": None, "arguments": "", "fragments": 0})
                if d.id is not None:
                    assert call["id"] is None and d.type == "function", "id and type come once, first"
                    call["id"] = d.id
                if d.function.name is not None:
                    assert call["name"] is None and call["id"] is not None, "the name comes once, with the id"
                    call["name"] = d.function.name
                if d.function.arguments:
                    assert call["name"] is not None, "arguments only after the name"
                    call["arguments"] += d.function.arguments
                    call["fragments"] += 1
    return [calls[i] for i in sorted(calls)]


def message_calls(message: Any) -> list[tuple[str, str]]:
    return [(t.function.name, t.function.arguments) for t in message.tool_calls or ()]
