"""Formats whose arguments are JSON text, passed through as it arrives.

Two shapes: an envelope object `{"name": …, "arguments": {…}}` (json, qwen/Hermes, llama, mistral's
array, cohere) and a name in markers followed by the raw arguments object (deepseek V3 and V3.1, kimi
K2, mistral's `[TOOL_CALLS]name[ARGS]{…}`). The envelope's name must be its first key (after an
optional `"type": "function"`); other keys are skipped; arguments given as a JSON string are decoded.
"""

from __future__ import annotations

import json
import re

from parsers.tools.engine import Engine, Routes
from parsers.tools.grammar import Alt, Caps, Chars, Check, JStr, Lit, Pattern, Seq, Until, Ws, opt


def envelope_head(name_keys: tuple[str, ...]) -> Pattern:
    """`{` [`"type": "function",`] `"<name key>": "NAME"` — the part of an envelope that commits a call."""
    kind = Seq(Lit('"type"'), Ws(), ":", Ws(), JStr("type"), Ws(), ",", Ws())
    return Seq("{", Ws(), opt(kind), JStr("key"), Check(lambda caps: caps["key"] in name_keys), Ws(), ":",
               Ws(), JStr("name"))  # fmt: skip


HEAD = envelope_head(("name",))
_MEMBER = Seq(Ws(), ",", Ws(), JStr("key"), Ws(), ":", Ws())
_CLOSE = Seq(Ws(), "}")


class JsonCalls(Engine):
    """Envelope and raw-arguments bodies; subclasses say where calls start and what may follow."""

    ARG_KEYS: tuple[str, ...] = ("arguments", "parameters")
    _args_seen = False
    _in_list = False

    def _after_call(self) -> Routes:
        return ()

    def _open_envelope(self, caps: Caps) -> bool:
        if not self._accept_name(caps["name"]):
            return False
        self._open_call(caps["name"])
        self._args_seen = False
        return self._goto(self._members)

    @property
    def _members(self) -> Routes:
        return ((_MEMBER, self._member), (_CLOSE, self._close_envelope))

    def _member(self, caps: Caps) -> bool:
        if caps["key"] in self.ARG_KEYS and not self._args_seen:
            self._args_seen = True
            self._state = self._envelope_args
        else:
            self._start_stream(False, lambda: self._goto(self._members))
        return True

    def _envelope_args(self, final: bool) -> bool:
        c = self._skip_ws()
        if c is None:
            return final and self._fail(0, "")
        if c == "{":
            self._start_stream(True, lambda: self._goto(self._members))
        else:
            self._start_stream(False, self._string_args)
        return True

    def _string_args(self) -> None:
        try:
            value = json.loads(self._stream.take())
            if isinstance(value, str):
                value = json.loads(value)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            self._args(json.dumps(value, ensure_ascii=False))
        self._goto(self._members)

    def _close_envelope(self, caps: Caps) -> bool:
        self._end_call()
        return self._goto(self._after_call())

    def _open_raw(self, caps: Caps) -> bool:
        if not self._accept_name(caps["name"]):
            return False
        self._open_call(caps["name"], caps.get("id"))
        self._state = self._raw_args
        return True

    def _raw_args(self, final: bool) -> bool:
        c = self._skip_ws()
        if c is None:
            return final and self._fail(0, "")
        if c != "{":
            return self._fail(0, "")
        self._start_stream(True, self._raw_done)
        return True

    def _raw_done(self) -> None:
        self._end_call()
        self._goto(self._after_call())


class JsonParser(JsonCalls):
    """`json`: a bare envelope or an array of them, anywhere in the text."""

    def _triggers(self) -> Routes:
        return ((Seq("[", Ws(), HEAD), self._open_listed), (HEAD, self._open_single))

    def _open_listed(self, caps: Caps) -> bool:
        self._in_list = True
        return self._open_envelope(caps)

    def _open_single(self, caps: Caps) -> bool:
        self._in_list = False
        return self._open_envelope(caps)

    def _after_call(self) -> Routes:
        if not self._in_list:
            return ()
        return ((Seq(Ws(), ",", Ws(), HEAD), self._open_envelope), (Seq(Ws(), "]"), self._to_text))


class QwenParser(JsonCalls):
    """`qwen` (Hermes): `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>` per call."""

    def _triggers(self) -> Routes:
        return ((Seq("<tool_call>", Ws(), HEAD), self._open_envelope),)

    def _after_call(self) -> Routes:
        return ((Seq(Ws(), "</tool_call>"), self._to_text),)


class LlamaParser(JsonCalls):
    """`llama` (3.x): `<|python_tag|>` and/or bare envelopes, several separated by `;`."""

    def _triggers(self) -> Routes:
        return ((Seq("<|python_tag|>", Ws(), HEAD), self._open_envelope), (HEAD, self._open_envelope))

    def _after_call(self) -> Routes:
        return ((Seq(Ws(), ";", Ws(), HEAD), self._open_envelope),)


_MISTRAL_NAME = Chars("name", r"[\w.\-]", r"[A-Za-z_]")


class MistralParser(JsonParser):
    """`mistral`: `[TOOL_CALLS] [{envelope}, …]`, `[TOOL_CALLS] {envelope}` or (tokenizer v11+)
    `[TOOL_CALLS]name[ARGS]{…}` / `[TOOL_CALLS]name[CALL_ID]id[ARGS]{…}`, repeated for parallel calls."""

    def _triggers(self) -> Routes:
        call_id = opt(Seq("[CALL_ID]", Until("id", "[", 64)))
        return (
            (Seq("[TOOL_CALLS]", Ws(), "[", Ws(), HEAD), self._open_listed),
            (Seq("[TOOL_CALLS]", Ws(), HEAD), self._open_single),
            (Seq("[TOOL_CALLS]", Ws(), _MISTRAL_NAME, call_id, "[ARGS]"), self._open_raw_single),
        )

    def _open_raw_single(self, caps: Caps) -> bool:
        self._in_list = False
        return self._open_raw(caps)


_C_HEAD = envelope_head(("tool_name", "name"))
_START_ACTION, _END_ACTION = "<|START_ACTION|>", "<|END_ACTION|>"
_COHERE_DROP = Alt("<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_TEXT|>", "<|END_TEXT|>")


class CohereParser(JsonParser):
    """`cohere`: `<|START_ACTION|>` an envelope (`tool_name`, `parameters`) or an array `<|END_ACTION|>`;
    the response/text markers around normal text are dropped."""

    def _triggers(self) -> Routes:
        return (
            (Seq(_START_ACTION, Ws(), "[", Ws(), _C_HEAD), self._open_listed),
            (Seq(_START_ACTION, Ws(), _C_HEAD), self._open_single),
            (_COHERE_DROP, lambda caps: True),
        )

    def _after_call(self) -> Routes:
        if not self._in_list:
            return ((Seq(Ws(), _END_ACTION), self._to_text),)
        return (
            (Seq(Ws(), ",", Ws(), _C_HEAD), self._open_envelope),
            (Seq(Ws(), "]", Ws(), _END_ACTION), self._to_text),
        )


class SectionCalls(JsonCalls):
    """Marker formats: an optional section marker, then calls `HEAD{args}TRAILER`, then the section end."""

    BEGIN: str
    END: str
    CALL: Pattern
    TRAILER: Pattern

    def _triggers(self) -> Routes:
        return ((Seq(opt(Seq(self.BEGIN, Ws())), self.CALL), self._open_raw),)

    def _after_call(self) -> Routes:
        return ((self.TRAILER, lambda caps: self._goto(self._next_call)),)

    @property
    def _next_call(self) -> Routes:
        return ((Seq(Ws(), self.CALL), self._open_raw), (Seq(Ws(), self.END), self._to_text))


_DS_CALL, _DS_SEP, _DS_END = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"


class DeepSeekParser(SectionCalls):
    """`deepseek` (V3): `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{…}
    \\n```<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>`."""

    BEGIN, END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
    CALL = Seq(_DS_CALL, Ws(), "function", Ws(), _DS_SEP, Until("name", "\n"), "\n", Ws(), "```json", Ws())
    TRAILER = Seq(Ws(), "```", Ws(), _DS_END)


class DeepSeek31Parser(SectionCalls):
    """`deepseek31` (V3.1, V3.2-Exp): `…<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}<｜tool▁call▁end｜>…`."""

    BEGIN, END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
    CALL = Seq(_DS_CALL, Until("name", "<"), _DS_SEP, Ws())
    TRAILER = Seq(Ws(), _DS_END)


_KIMI_ID = re.compile(r"(?:functions\.)?([\w.\-]+):\d+")


def _kimi_name(caps: Caps) -> bool:
    m = _KIMI_ID.fullmatch(caps["id"])
    if m is not None:
        caps["name"] = m.group(1)
    return m is not None


class KimiK2Parser(SectionCalls):
    """`kimik2`: `<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX
    <|tool_call_argument_begin|>{…}<|tool_call_end|>…<|tool_calls_section_end|>`; the id is kept."""

    BEGIN, END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
    CALL = Seq(
        "<|tool_call_begin|>", Ws(), Until("id", "<"), Check(_kimi_name), "<|tool_call_argument_begin|>", Ws()
    )
    TRAILER = Seq(Ws(), "<|tool_call_end|>")
