"""The machinery every tool-call format shares: text scan, routes between calls, call bookkeeping.

A parser is a set of states, each a method `(final) -> progressed`. The text state emits normal text
up to the first place where a call could begin and holds back only from there. A call is committed
once its name is complete; before that, any mismatch turns the held text back into normal text. After
it, arguments are handed out as they arrive; if the output is cut off or turns malformed, the call is
closed with arguments that still parse and the rest of the text is normal text again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from parsers.tools.grammar import FAIL, NEED, Caps, Pattern
from parsers.tools.jsonstream import DONE, JsonStream
from parsers.types import Tool, ToolCallDelta, ToolParse

Action = Callable[[Caps], bool]
Routes = Sequence[tuple[Pattern, Action]]
State = Callable[[bool], bool]

_NAME = re.compile(r"[\w.\-:/]{1,256}")


def tool_schemas(tools: Iterable[Tool] | None) -> dict[str, dict[str, str]] | None:
    """Function name -> {parameter: declared JSON-schema type}; None when no tools were given."""
    if tools is None:
        return None
    schemas: dict[str, dict[str, str]] = {}
    for tool in tools:
        function = tool.get("function", tool)
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        types: dict[str, str] = {}
        params = function.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        for key, schema in (props or {}).items():
            declared = schema.get("type") if isinstance(schema, dict) else None
            if isinstance(declared, list):
                scalar = [t for t in declared if t != "null"]
                declared = scalar[0] if len(scalar) == 1 else None
            if isinstance(declared, str):
                types[key] = declared
        schemas[function["name"]] = types
    return schemas


class Engine:
    """Base class of the tool parsers; subclasses provide `_triggers()` and the call-body states."""

    def __init__(self, tools: Iterable[Tool] | None = None) -> None:
        self._schemas = tool_schemas(tools)
        self._buf = ""
        self._text: list[str] = []
        self._deltas: list[ToolCallDelta] = []
        self._count = 0
        self._open = False
        self._sent = False
        self._name = ""
        self._state: State = self._in_text
        self._routes: Routes = ()
        self._stream = JsonStream()
        self._after_stream: Callable[[], object] = self._stream_done
        self._emit_stream = True
        self._trigger_routes = self._triggers()
        assert not any(pattern.nullable for pattern, _ in self._trigger_routes), "a trigger must consume"
        first = sorted({c for pattern, _ in self._trigger_routes for c in pattern.first})
        self._first = re.compile("[" + re.escape("".join(first)) + "]")

    def _triggers(self) -> Routes:
        raise NotImplementedError

    # -- the ToolParser protocol --------------------------------------------------------------------

    def feed(self, text: str) -> ToolParse:
        self._buf += text
        while self._state(False):
            pass
        return self._take()

    def finish(self) -> ToolParse:
        while self._state(True):
            pass
        if self._open:
            self._end_call(self._call_tail())
        self._text.append(self._buf)
        self._buf = ""
        return self._take()

    def _take(self) -> ToolParse:
        text = self._text[0] if len(self._text) == 1 else "".join(self._text)
        self._text.clear()
        deltas, self._deltas = self._deltas, []
        if len(deltas) < 2:
            return ToolParse(text, deltas)
        merged = [deltas[0]]
        for d in deltas[1:]:
            last = merged[-1]
            if d.name is None and d.tool_index == last.tool_index:
                merged[-1] = replace(last, arguments_delta=last.arguments_delta + d.arguments_delta)
            else:
                merged.append(d)
        return ToolParse(text, merged)

    # -- calls ------------------------------------------------------------------------------------------

    def _accept_name(self, name: str) -> bool:
        if _NAME.fullmatch(name) is None:
            return False
        return self._schemas is None or name in self._schemas

    def _types(self) -> dict[str, str]:
        return (self._schemas or {}).get(self._name, {})

    def _open_call(self, name: str, call_id: str | None = None) -> None:
        self._deltas.append(ToolCallDelta(self._count, name, "", call_id))
        self._count += 1
        self._open, self._sent, self._name = True, False, name

    def _args(self, fragment: str) -> None:
        if fragment:
            self._deltas.append(ToolCallDelta(self._count - 1, None, fragment))
            self._sent = True

    def _end_call(self, tail: str = "") -> None:
        self._args(tail)
        if not self._sent:
            self._args("{}")
        self._open = False

    def _call_tail(self) -> str:
        """What completes the arguments of the open call when it ends between two of its tokens."""
        return ""

    def _fail(self, index: int, tail: str) -> bool:
        """Ends the open call with `tail`; the text from `index` on is normal text again."""
        self._end_call(tail)
        self._buf = self._buf[index:]
        self._state = self._in_text
        return True

    # -- states ----------------------------------------------------------------------------------------

    def _try(self, routes: Routes, start: int, final: bool) -> int:
        for pattern, action in routes:
            caps: Caps = {}
            end = pattern.match(self._buf, start, caps)
            if end == NEED:
                if final:
                    continue
                return NEED
            if end >= 0 and action(caps):
                return end
        return FAIL

    def _in_text(self, final: bool) -> bool:
        buf, pos = self._buf, 0
        while (m := self._first.search(buf, pos)) is not None:
            p = m.start()
            end = self._try(self._trigger_routes, p, final)
            if end == NEED:
                self._text.append(buf[:p])
                self._buf = buf[p:]
                return False
            if end >= 0:
                self._text.append(buf[:p])
                self._buf = buf[end:]
                return True
            pos = p + 1
        self._text.append(buf)
        self._buf = ""
        return False

    def _goto(self, routes: Routes) -> bool:
        self._routes = routes
        self._state = self._in_routes
        return True

    def _to_text(self, caps: Caps) -> bool:
        self._state = self._in_text
        return True

    def _in_routes(self, final: bool) -> bool:
        end = self._try(self._routes, 0, final)
        if end == NEED:
            return False
        if end == FAIL and final and self._buf and self._try(self._routes, 0, False) == NEED:
            self._buf = ""  # the output ended inside call markup (`</tool_ca`): drop the fragment
        if end == FAIL:
            if self._open:
                return self._fail(0, self._call_tail())
            self._state = self._in_text
            return True
        self._buf = self._buf[end:]
        return True

    def _start_stream(self, emit: bool, then: Callable[[], object]) -> None:
        self._stream = JsonStream()
        self._emit_stream = emit
        self._after_stream = then
        self._state = self._in_stream

    def _in_stream(self, final: bool) -> bool:
        status, index = self._stream.feed(self._buf)
        if status == FAIL:
            return self._fail(index, self._stream.close() if self._emit_stream else "")
        if self._emit_stream:
            self._args(self._stream.take())
        if status == DONE:
            self._buf = self._buf[index:]
            self._after_stream()
            return True
        self._buf = self._buf[index:]
        if final:
            tail = self._stream.close(self._buf) if self._emit_stream else ""
            return self._fail(len(self._buf), tail)
        return False

    def _stream_done(self) -> None:
        self._end_call()
        self._state = self._in_text

    def _skip_ws(self) -> str | None:
        """Drops leading whitespace; the next character, or None when the buffer ran out."""
        stripped = self._buf.lstrip()
        self._buf = stripped
        return stripped[0] if stripped else None
