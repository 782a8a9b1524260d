"""An incremental scanner of one JSON value that hands out its text as soon as it is safe to.

"Safe" means closing brackets (and a closing quote) alone complete it: the scanner holds back commas,
object keys and colons until the next value starts, and literals (numbers, true/false/null) until they
end. So a call cut off at any point still has arguments that parse, and nothing handed out is ever
taken back. Raw control characters inside strings, which strict JSON forbids, are passed on escaped.
"""

from __future__ import annotations

import json
import re

from parsers.tools.grammar import FAIL, NEED

DONE = 0
_VALUE, _VALUE_OR_CLOSE, _KEY_OR_CLOSE, _KEY, _COLON, _AFTER, _STRING, _END = range(8)

_STR_STOP = re.compile(r'["\\\x00-\x1f]')
_WS_RUN = re.compile(r"[ \t\r\n]+")
_LIT_RUN = re.compile(r"[-+.0-9a-zA-Z]+")
_LITERAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null")
_SIMPLE_ESCAPES = frozenset('"\\/bfnrt')
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_CONTROL = {chr(c): json.dumps(chr(c))[1:-1] for c in range(32)}


class JsonStream:
    """Scans one JSON value fed as it arrives; `take()` returns the newly safe text."""

    __slots__ = ("_closers", "_in_key", "_mode", "_parts", "_safe", "_size")

    def __init__(self) -> None:
        self._closers: list[str] = []
        self._mode = _VALUE
        self._in_key = False
        self._parts: list[str] = []
        self._size = 0  # characters scanned and not yet taken
        self._safe = 0  # how many of them closing brackets complete

    @property
    def done(self) -> bool:
        return self._mode == _END

    def feed(self, s: str) -> tuple[int, int]:
        """Scans `s`: `(DONE, end)` when the value ends at `end`, `(NEED, consumed)` when `s` ran out
        (an unfinished literal or escape is left unconsumed), `(FAIL, index)` at invalid JSON."""
        i, n = 0, len(s)
        while i < n:
            mode = self._mode
            if mode == _STRING:
                i = self._string(s, i)
                if i < 0:
                    return FAIL, -i - 1
                if self._mode == _STRING:
                    return NEED, i
                if self._mode == _END:
                    return DONE, i
                continue
            c = s[i]
            if c in " \t\r\n":
                m = _WS_RUN.match(s, i)
                assert m is not None
                self._add(m.group())
                i = m.end()
                continue
            if mode in (_VALUE, _VALUE_OR_CLOSE):
                if c == "]" and mode == _VALUE_OR_CLOSE:
                    self._close(c)
                elif c == "{" or c == "[":
                    self._open(c)
                elif c == '"':
                    self._add(c)
                    self._mode, self._in_key = _STRING, False
                    self._safe = self._size
                else:
                    m = _LIT_RUN.match(s, i)
                    if m is None:
                        return FAIL, i
                    if m.end() == n:
                        return NEED, i
                    if not _LITERAL.fullmatch(m.group()):
                        return FAIL, i
                    self._add(m.group())
                    self._after_value()
                    i = m.end()
                    if self._mode == _END:
                        return DONE, i
                    continue
            elif mode in (_KEY_OR_CLOSE, _KEY):
                if c == '"':
                    self._add(c)
                    self._mode, self._in_key = _STRING, True
                elif c == "}" and mode == _KEY_OR_CLOSE:
                    self._close(c)
                else:
                    return FAIL, i
            elif mode == _COLON:
                if c != ":":
                    return FAIL, i
                self._add(c)
                self._mode = _VALUE
            elif mode == _AFTER:
                if c == ",":
                    self._add(c)
                    self._mode = _KEY if self._closers[-1] == "}" else _VALUE
                elif c == self._closers[-1]:
                    self._close(c)
                else:
                    return FAIL, i
            else:
                return DONE, i
            i += 1
            if self._mode == _END:
                return DONE, i
        return NEED, i

    def take(self) -> str:
        """The text that became safe since the last call."""
        if not self._safe:
            return ""
        text = "".join(self._parts)
        out, rest = text[: self._safe], text[self._safe :]
        self._parts = [rest] if rest else []
        self._size -= self._safe
        self._safe = 0
        return out

    def close(self, rest: str = "") -> str:
        """Ends the value where the input ended: the last safe text plus what completes it. A literal
        left unconsumed in `rest` (e.g. `12` at the very end) is kept when it is whole."""
        if self._mode in (_VALUE, _VALUE_OR_CLOSE) and _LITERAL.fullmatch(rest.strip()):
            self._add(rest.strip())
            self._after_value()
        out = self.take()
        if self._mode == _STRING and not self._in_key:
            out += '"'
        return out + "".join(reversed(self._closers))

    def _string(self, s: str, i: int) -> int:
        """Scans string content from `i`; returns the next index, or -(index + 1) on invalid input."""
        n = len(s)
        while i < n:
            m = _STR_STOP.search(s, i)
            j = m.start() if m is not None else n
            if j > i:
                self._add(s[i:j])
            if m is None:
                i = n
                break
            c = s[j]
            if c == '"':
                self._add(c)
                i = j + 1
                if self._in_key:
                    self._mode = _COLON
                else:
                    self._after_value()
                return i
            if c == "\\":
                if j + 1 >= n:
                    i = j
                    break
                kind = s[j + 1]
                if kind in _SIMPLE_ESCAPES:
                    self._add(s[j : j + 2])
                    i = j + 2
                elif kind == "u":
                    if j + 6 > n:
                        if _HEX4.match(s[j + 2 :].ljust(4, "0")) is None:
                            return -(j + 1)
                        i = j
                        break
                    if _HEX4.fullmatch(s, j + 2, j + 6) is None:
                        return -(j + 1)
                    self._add(s[j : j + 6])
                    i = j + 6
                else:
                    # An escape JSON does not know: keep the backslash as a character.
                    self._add("\\\\")
                    i = j + 1
            else:
                self._add(_CONTROL[c])
                i = j + 1
        if not self._in_key:
            self._safe = self._size
        return i

    def _add(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)

    def _open(self, c: str) -> None:
        self._closers.append("}" if c == "{" else "]")
        self._add(c)
        self._mode = _KEY_OR_CLOSE if c == "{" else _VALUE_OR_CLOSE
        self._safe = self._size

    def _close(self, c: str) -> None:
        self._closers.pop()
        self._add(c)
        self._after_value()

    def _after_value(self) -> None:
        self._mode = _AFTER if self._closers else _END
        self._safe = self._size
