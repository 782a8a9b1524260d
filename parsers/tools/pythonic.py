"""`pythonic` (Llama 4 and others): `[f(a=1, b="x"), g()]`, keyword arguments as Python literals.

String arguments are decoded and streamed as they arrive; other literals (numbers, True/False/None,
lists, dicts, tuples, triple-quoted or prefixed strings) arrive whole, converted to JSON. The
`<|python_start|>`/`<|python_end|>` markers around the list are dropped.
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
import warnings
from json.encoder import encode_basestring

from parsers.tools.engine import Engine, Routes
from parsers.tools.grammar import NEED, Alt, Caps, Chars, Seq, Ws

_CALL = Seq(Chars("name", r"[\w.]", r"[A-Za-z_]"), Ws(), "(")
_KWARG = Seq(Ws(), Chars("key", r"\w", r"[A-Za-z_]"), Ws(), "=", Ws())
_DROP = Alt("<|python_start|>", "<|python_end|>")
_STOPS = {"'": re.compile(r"['\\]"), '"': re.compile(r'["\\]')}
_SIMPLE = {"\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
           "v": "\v", "\n": ""}  # fmt: skip
_HEX_LEN = {"x": 2, "u": 4, "U": 8}
_HEX = re.compile(r"[0-9a-fA-F]+")
_OCTAL = "01234567"
_FAIL_ESCAPE = -2


def _escape_end(s: str, j: int) -> int:
    """End of the escape sequence at `s[j]` (a backslash), NEED when cut off, or _FAIL_ESCAPE."""
    n = len(s)
    if j + 1 >= n:
        return NEED
    kind = s[j + 1]
    if kind in _HEX_LEN:
        end = j + 2 + _HEX_LEN[kind]
        digits = s[j + 2 : end]
        if digits and not _HEX.fullmatch(digits):
            return _FAIL_ESCAPE
        return NEED if end > n else end
    if kind == "N":
        close = s.find("}", j + 2, j + 100)
        if not s.startswith("{", j + 2) and j + 2 < n:
            return _FAIL_ESCAPE
        return close + 1 if close >= 0 else NEED if n - j < 100 else _FAIL_ESCAPE
    if kind in _OCTAL:
        k = j + 1
        while k < n and k < j + 4 and s[k] in _OCTAL:
            k += 1
        return NEED if k == n and k < j + 4 else k
    return j + 2


def _decode_escape(esc: str) -> str:
    kind = esc[1]
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind in _HEX_LEN:
        code = int(esc[2:], 16)
        if code > 0x10FFFF:
            raise ValueError(esc)
        return chr(code)
    if kind == "N":
        return unicodedata.lookup(esc[3:-1])
    if kind in _OCTAL:
        return chr(int(esc[1:], 8))
    return esc  # Python keeps an unknown escape as written


def _to_json(value: object) -> object:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, (str, int, float, bool)) for k in value):
        return {k: _to_json(v) for k, v in value.items()}
    raise ValueError(f"not JSON: {type(value).__name__}")


def literal_to_json(text: str) -> str:
    """The JSON text of a Python literal; ValueError when it is none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = ast.literal_eval(text.strip())
        return json.dumps(_to_json(value), ensure_ascii=False, allow_nan=False)
    except (SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ValueError(str(e)) from e


class PythonicParser(Engine):
    _first_param = True
    _key = ""
    _quote = ""
    _scan = (0, 0, "", False)  # position, depth, open quote, triple-quoted

    def _triggers(self) -> Routes:
        return ((Seq("[", Ws(), _CALL), self._open_py), (_DROP, lambda caps: True))

    def _call_tail(self) -> str:
        return "}"

    def _open_py(self, caps: Caps) -> bool:
        if not self._accept_name(caps["name"]):
            return False
        self._open_call(caps["name"])
        self._args("{")
        self._first_param = True
        return self._goto(self._kwargs)

    @property
    def _kwargs(self) -> Routes:
        return ((_KWARG, self._kwarg), (Seq(Ws(), ")"), self._end_py))

    @property
    def _after_value(self) -> Routes:
        return ((Seq(Ws(), ","), lambda caps: self._goto(self._kwargs)), (Seq(Ws(), ")"), self._end_py))

    def _end_py(self, caps: Caps) -> bool:
        self._end_call("}")
        return self._goto(((Seq(Ws(), ",", Ws(), _CALL), self._open_py), (Seq(Ws(), "]"), self._to_text)))

    def _kwarg(self, caps: Caps) -> bool:
        self._key = caps["key"]
        self._state = self._value
        return True

    def _prefix(self, opening: str) -> str:
        sep = "" if self._first_param else ", "
        self._first_param = False
        return f"{sep}{json.dumps(self._key)}: {opening}"

    def _value(self, final: bool) -> bool:
        self._buf = buf = self._buf.lstrip()
        if not buf:
            return final and self._fail(0, "}")
        q = buf[0]
        if q in _STOPS and not buf.startswith(q * 3):
            if len(buf) < 3 and buf == q * len(buf) and not final:
                return False  # `'` or `''`: maybe the start of `'''`
            self._quote = q
            self._buf = buf[1:]
            self._args(self._prefix('"'))
            self._state = self._string
            return True
        self._scan = (0, 0, "", False)
        self._state = self._literal
        return True

    def _string(self, final: bool) -> bool:
        buf, q, stop = self._buf, self._quote, _STOPS[self._quote]
        out: list[str] = []
        i, done = 0, False
        while (m := stop.search(buf, i)) is not None:
            j = m.start()
            out.append(buf[i:j])
            if buf[j] == q:
                i, done = j + 1, True
                break
            end = _escape_end(buf, j)
            if end == NEED:
                i = j
                break
            try:
                if end == _FAIL_ESCAPE:
                    raise ValueError(buf[j : j + 2])
                out.append(_decode_escape(buf[j:end]))
            except (ValueError, KeyError):
                self._args(encode_basestring("".join(out))[1:])
                return self._fail(j, "}")
            i = end
        else:
            out.append(buf[i:])
            i = len(buf)
        cut = final and not done
        if cut:
            i = len(buf)
        self._args(encode_basestring("".join(out))[1 : None if done or cut else -1])
        self._buf = buf[i:]
        if cut:
            return self._fail(0, "}")
        return done and self._goto(self._after_value)

    def _literal(self, final: bool) -> bool:
        buf = self._buf
        end = self._scan_literal(buf)
        if end == NEED and not final:
            return False
        text = buf if end == NEED else buf[:end]
        try:
            value = literal_to_json(text)
        except ValueError:
            return self._fail(0, "}")
        self._args(self._prefix(value))
        self._buf = buf[len(text) :]
        if end == NEED:
            return self._fail(len(self._buf), "}")
        return self._goto(self._after_value)

    def _scan_literal(self, s: str) -> int:
        """Index of the `,` or `)` that ends the literal, NEED when not seen yet; resumable."""
        i, depth, quote, triple = self._scan
        n = len(s)
        while i < n:
            c = s[i]
            if quote:
                if c == "\\":
                    if i + 1 >= n:
                        break
                    i += 2
                    continue
                if c == quote:
                    if not triple:
                        quote = ""
                    elif s.startswith(quote * 3, i):
                        quote, i = "", i + 2
                    elif n - i < 3:
                        break
                i += 1
                continue
            if c in "'\"":
                if n - i < 3 and s[i:] == c * (n - i):
                    break
                triple = s.startswith(c * 3, i)
                quote, i = c, i + (3 if triple else 1)
                continue
            if c in "([{":
                depth += 1
            elif c in ")]}":
                if depth == 0:
                    return i
                depth -= 1
            elif c == "," and depth == 0:
                return i
            i += 1
        self._scan = (i, depth, quote, triple)
        return NEED
