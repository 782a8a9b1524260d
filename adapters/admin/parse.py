"""SMG's parser endpoints: run a tool-call or reasoning parser over a given text.

``POST /parse/function_call`` ``{text, tool_call_parser, tools}`` → ``{remaining_text, tool_calls, success}``
``POST /parse/reasoning`` ``{text, reasoning_parser}`` → ``{normal_text, reasoning_text, success}``
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web

from adapters import params
from dataplane.errors import InvalidRequest
from parsers import make_reasoning_parser, make_tool_parser, parse_complete

T = TypeVar("T")


async def function_call(request: web.Request) -> web.Response:
    body = params.parse_body(await request.read())
    _only(body, {"text", "tool_call_parser", "tools"})
    text = _required_text(body)
    tools = params.get(body, "tools", list, [])
    if not all(isinstance(t, dict) for t in tools):
        raise InvalidRequest("'tools' must be a list of tool objects", param="tools")
    parser = _made(body, "tool_call_parser", lambda name: make_tool_parser(name, tools or None))
    remaining, calls = parse_complete(parser, text)
    tool_calls = [{"function": {"name": c.name, "arguments": c.arguments}} for c in calls]
    return _json({"remaining_text": remaining, "tool_calls": tool_calls, "success": True})


async def reasoning(request: web.Request) -> web.Response:
    body = params.parse_body(await request.read())
    _only(body, {"text", "reasoning_parser"})
    text = _required_text(body)
    parser = _made(body, "reasoning_parser", make_reasoning_parser)
    first, last = parser.feed(text), parser.finish()
    return _json(
        {
            "normal_text": first.normal + last.normal,
            "reasoning_text": first.reasoning + last.reasoning,
            "success": True,
        }
    )


def _only(body: Mapping[str, Any], allowed: set[str]) -> None:
    params.reject_unknown(body, allowed, {})


def _required_text(body: Mapping[str, Any]) -> str:
    if not isinstance(body.get("text"), str):
        raise InvalidRequest("'text' is required (a string)", param="text")
    text: str = body["text"]
    return text


def _made(body: Mapping[str, Any], key: str, make: Callable[[str], T]) -> T:
    name = params.get(body, key, str, "")
    if not name:
        raise InvalidRequest(f"'{key}' is required", param=key)
    try:
        return make(name)
    except ValueError as exc:  # an unknown name; the message lists the known ones
        raise InvalidRequest(str(exc), param=key) from None


def _json(payload: object) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")
