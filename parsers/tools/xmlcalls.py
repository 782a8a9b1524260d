"""Formats whose arguments are XML-ish key/value pairs, converted to a JSON object as they arrive.

Typing: a parameter the tool schema declares `string` is kept verbatim and streamed as it arrives;
another declared type is parsed as that type (`integer`, `number`, `boolean`, `object`, `array`);
without a declaration the value is inferred: JSON if it parses, Python's True/False/None, else the
verbatim string. An undeclared value that cannot be JSON or a Python literal (its first character
says so) is streamed as a string too; the others arrive whole, at their end tag.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring

from parsers.tools.engine import Engine, Routes
from parsers.tools.grammar import Alt, Attr, Caps, Pattern, Seq, Until, Ws, opt, partial_suffix

_STREAM, _HOLD = "stream", "hold"
_JSON_START = frozenset('-0123456789"{[ \t\r\n')
_WORDS = ("true", "false", "null", "True", "False", "None")
_INT = re.compile(r"[-+]?[0-9]+")
_PY_LITERALS: dict[str, object] = {"True": True, "False": False, "None": None}
_ENTITY = re.compile(r"&(lt|gt|amp|quot|apos);")
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _strict_json(text: str) -> object:
    """JSON without NaN/Infinity; ValueError for anything else that does not parse (too deep included)."""

    def reject(constant: str) -> object:
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=reject)
    except RecursionError as e:
        raise ValueError("nested too deeply") from e


def infer_value(raw: str) -> object:
    """An undeclared parameter value: JSON, else a Python literal, else the verbatim string."""
    text = raw.strip()
    try:
        return _strict_json(text)
    except ValueError:
        pass
    return _PY_LITERALS.get(text, raw)


def coerce_value(raw: str, declared: str | None) -> object:
    """A parameter value typed by its declared JSON-schema type, inferred when that does not fit."""
    text = raw.strip()
    if declared == "string":
        return raw
    if declared == "integer" and _INT.fullmatch(text) and len(text) < 4000:
        return int(text)
    if declared == "boolean" and text in ("true", "True", "false", "False"):
        return text in ("true", "True")
    if declared in ("number", "object", "array"):
        try:
            value = _strict_json(text)
        except ValueError:
            value = None
        wanted: dict[str, tuple[type, ...]] = {"number": (int, float), "object": (dict,), "array": (list,)}
        if isinstance(value, wanted[declared]) and not isinstance(value, bool):
            return value
    return infer_value(raw)


def _undeclared_mode(buf: str, final: bool) -> str | None:
    """Stream an undeclared value once it can no longer be JSON or a Python literal; None: not known yet."""
    if not buf:
        return _HOLD if final else None
    if buf[0] in _JSON_START:
        return _HOLD
    viable = [word for word in _WORDS if word.startswith(buf[: len(word)])]
    if not viable:
        return _STREAM
    if final or any(buf.startswith(word) for word in viable):
        return _HOLD
    return None


def _decode_entities(text: str) -> str:
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


def _escape(text: str) -> str:
    return encode_basestring(text)[1:-1]


class XmlCalls(Engine):
    """Calls `OPEN (PARAM value PARAM_END)* CALL_END [TRAILER]`; `NEXT` and `SECTION_END` when a section
    holds several calls. Subclasses set the patterns; `STRIP_NEWLINES` drops one newline of padding on
    each side of a value, `ENTITIES` decodes XML entities in values."""

    OPEN: Pattern
    PARAM: Pattern
    PARAM_END: str
    CALL_END: Pattern
    TRAILER: Pattern | None = None
    NEXT: Pattern | None = None
    SECTION_END: str = ""
    STRIP_NEWLINES = False
    ENTITIES = False

    _first_param = True
    _key = ""
    _declared: str | None = None
    _mode: str | None = None
    _lead = False
    _opened = False
    _searched = 0

    def _triggers(self) -> Routes:
        return ((self.OPEN, self._open_xml),)

    def _call_tail(self) -> str:
        return "}"

    def _open_xml(self, caps: Caps) -> bool:
        if not self._accept_name(caps["name"]):
            return False
        self._open_call(caps["name"])
        self._args("{")
        self._first_param = True
        return self._goto(self._params)

    @property
    def _params(self) -> Routes:
        return ((Seq(Ws(), self.PARAM), self._param), (self.CALL_END, self._call_end))

    def _param(self, caps: Caps) -> bool:
        self._key = caps["key"].strip()
        declared = self._types().get(self._key)
        if caps.get("string") == "true":
            declared = "string"
        self._declared = declared
        self._mode = None if declared is None else _STREAM if declared == "string" else _HOLD
        self._lead = self.STRIP_NEWLINES
        self._opened, self._searched = False, 0
        self._state = self._value
        return True

    def _call_end(self, caps: Caps) -> bool:
        self._end_call("}")
        if self.TRAILER is not None:
            return self._goto(((self.TRAILER, self._to_text),))
        if self.NEXT is None:
            return self._to_text(caps)
        return self._goto(
            ((Seq(Ws(), self.NEXT), self._open_xml), (Seq(Ws(), self.SECTION_END), self._to_text))
        )

    def _prefix(self, opening: str) -> str:
        sep = "" if self._first_param else ", "
        self._first_param = False
        return f"{sep}{json.dumps(self._key, ensure_ascii=False)}: {opening}"

    def _value(self, final: bool) -> bool:
        buf = self._buf
        if self._lead:
            if not buf and not final:
                return False
            if buf.startswith("\n"):
                self._buf = buf = buf[1:]
            self._lead = False
        if self._mode is None:
            self._mode = _undeclared_mode(buf, final)
            if self._mode is None:
                return False
        if self._mode == _HOLD:
            return self._hold_value(final)
        if not self._opened:
            self._opened = True
            self._args(self._prefix('"'))
        return self._stream_value(final)

    def _stream_value(self, final: bool) -> bool:
        buf, end_tag = self._buf, self.PARAM_END
        end = buf.find(end_tag)
        done = end >= 0 or final
        content = buf[:end] if end >= 0 else buf if final else buf[: len(buf) - partial_suffix(buf, end_tag)]
        consumed = len(content) + (len(end_tag) if end >= 0 else 0)
        if self.STRIP_NEWLINES and content.endswith("\n") and (end >= 0 or not done):
            content = content[:-1]
            consumed -= 0 if done else 1
        if self.ENTITIES and not done:
            amp = content.rfind("&")
            if amp >= 0 and ";" not in content[amp:] and len(content) - amp < 8:
                consumed -= len(content) - amp
                content = content[:amp]
        if self.ENTITIES:
            content = _decode_entities(content)
        self._args(_escape(content) + ('"' if done else ""))
        self._buf = buf[consumed:]
        if not done:
            return False
        if end < 0:
            return self._fail(len(self._buf), "}")
        return self._goto(self._params)

    def _hold_value(self, final: bool) -> bool:
        buf, end_tag = self._buf, self.PARAM_END
        end = buf.find(end_tag, self._searched)
        if end < 0 and not final:
            self._searched = max(0, len(buf) - len(end_tag) + 1)  # a long value is searched once
            return False
        raw = buf[:end] if end >= 0 else buf
        if self.STRIP_NEWLINES and end >= 0 and raw.endswith("\n"):
            raw = raw[:-1]
        if self.ENTITIES:
            raw = _decode_entities(raw)
        value = coerce_value(raw, self._declared)
        self._args(self._prefix(json.dumps(value, ensure_ascii=False)))
        if end < 0:
            return self._fail(len(buf), "}")
        self._buf = buf[end + len(end_tag) :]
        return self._goto(self._params)


class QwenXmlParser(XmlCalls):
    """`qwen_xml` (Qwen3-Coder, Qwen3.5): `<tool_call>\\n<function=NAME>\\n<parameter=KEY>\\nVALUE
    \\n</parameter>\\n</function>\\n</tool_call>`; values verbatim (no entity decoding), one newline of
    padding on each side dropped."""

    OPEN = Seq("<tool_call>", Ws(), "<function=", Until("name", ">"), ">")
    PARAM = Seq("<parameter=", Until("key", ">"), ">")
    PARAM_END = "</parameter>"
    CALL_END = Alt(Seq(Ws(), "</function>"), Seq(Ws(), "</tool_call>"))
    TRAILER = Seq(Ws(), "</tool_call>")
    STRIP_NEWLINES = True


class Glm4MoeParser(XmlCalls):
    """`glm45` / `glm47`: `<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n</tool_call>`
    (GLM-4.7 writes no newlines); values verbatim."""

    OPEN = Seq("<tool_call>", Ws(), Until("name", "\n<"))
    PARAM = Seq("<arg_key>", Until("key", "<"), "</arg_key>", Ws(), "<arg_value>")
    PARAM_END = "</arg_value>"
    CALL_END = Seq(Ws(), "</tool_call>")


_MM_INVOKE = Seq("<invoke", Ws(), "name=", Attr("name"), Ws(), ">")


class MinimaxM2Parser(XmlCalls):
    """`minimax_m2`: `<minimax:tool_call><invoke name="F"><parameter name="K">V</parameter></invoke>…
    </minimax:tool_call>`; several invokes are parallel calls; XML entities in values are decoded."""

    OPEN = Seq("<minimax:tool_call>", Ws(), _MM_INVOKE)
    PARAM = Seq("<parameter", Ws(), "name=", Attr("key"), Ws(), ">")
    PARAM_END = "</parameter>"
    CALL_END = Seq(Ws(), "</invoke>")
    NEXT = _MM_INVOKE
    SECTION_END = "</minimax:tool_call>"
    ENTITIES = True


_STEP3_INVOKE = Seq("<steptml:invoke", Ws(), "name=", Attr("name"), Ws(), ">")
_STEP3_CALL = Seq("<｜tool_call_begin｜>", Ws(), "function", Ws(), "<｜tool_sep｜>", Ws(), _STEP3_INVOKE)


class Step3Parser(XmlCalls):
    """`step3`: `<｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜>
    <steptml:invoke name="F"><steptml:parameter name="K">V</steptml:parameter></steptml:invoke>
    <｜tool_call_end｜>…<｜tool_calls_end｜>`."""

    OPEN = Seq(opt(Seq("<｜tool_calls_begin｜>", Ws())), _STEP3_CALL)
    PARAM = Seq("<steptml:parameter", Ws(), "name=", Attr("key"), Ws(), ">")
    PARAM_END = "</steptml:parameter>"
    CALL_END = Seq(Ws(), "</steptml:invoke>", Ws(), "<｜tool_call_end｜>")
    NEXT = _STEP3_CALL
    SECTION_END = "<｜tool_calls_end｜>"


_DSML_INVOKE = Seq("<｜DSML｜invoke", Ws(), "name=", Attr("name"), Ws(), ">")


class DeepSeekDsmlParser(XmlCalls):
    """`deepseek32` / `deepseek_v4`: `<｜DSML｜function_calls>` (V4: `tool_calls`) around `<｜DSML｜invoke
    name="F"><｜DSML｜parameter name="K" string="true">V</｜DSML｜parameter></｜DSML｜invoke>`;
    `string="true"` marks a verbatim string, `"false"` a JSON value."""

    OPEN = Seq("<｜DSML｜function_calls>", Ws(), _DSML_INVOKE)
    PARAM = Seq(
        "<｜DSML｜parameter", Ws(), "name=", Attr("key"), Ws(), opt(Seq("string=", Attr("string"), Ws())), ">"
    )
    PARAM_END = "</｜DSML｜parameter>"
    CALL_END = Seq(Ws(), "</｜DSML｜invoke>")
    NEXT = _DSML_INVOKE
    SECTION_END = "</｜DSML｜function_calls>"


class DeepSeekV4Parser(DeepSeekDsmlParser):
    OPEN = Seq("<｜DSML｜tool_calls>", Ws(), _DSML_INVOKE)
    SECTION_END = "</｜DSML｜tool_calls>"
