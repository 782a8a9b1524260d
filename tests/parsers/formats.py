"""How each tool-call format writes calls: the writers the conformance suite runs every parser with.

A writer turns `[(name, arguments), …]` (parallel calls) into the text a model of that family emits;
everything it writes is call markup, so the expected normal text is exactly the text around it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Call = tuple[str, dict[str, Any]]
Writer = Callable[[Sequence[Call]], str]


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def xml_value(value: object) -> str:
    """A parameter value as the XML-ish formats' chat templates write it: strings verbatim, else JSON."""
    return value if isinstance(value, str) else dumps(value)


def _json(calls: Sequence[Call]) -> str:
    objs = [{"name": n, "arguments": a} for n, a in calls]
    return dumps(objs[0] if len(objs) == 1 else objs)


def _qwen(calls: Sequence[Call]) -> str:
    return "".join(f"<tool_call>\n{dumps({'name': n, 'arguments': a})}\n</tool_call>" for n, a in calls)


def _qwen_xml(calls: Sequence[Call]) -> str:
    def params(args: dict[str, Any]) -> str:
        return "".join(f"<parameter={k}>\n{xml_value(v)}\n</parameter>\n" for k, v in args.items())

    return "".join(f"<tool_call>\n<function={n}>\n{params(a)}</function>\n</tool_call>" for n, a in calls)


def _llama(calls: Sequence[Call]) -> str:
    return "<|python_tag|>" + "; ".join(dumps({"name": n, "parameters": a}) for n, a in calls)


def _py(value: object) -> str:
    return repr(value)


def _pythonic(calls: Sequence[Call]) -> str:
    return "[" + ", ".join(f"{n}({', '.join(f'{k}={_py(v)}' for k, v in a.items())})" for n, a in calls) + "]"


def _mistral(calls: Sequence[Call]) -> str:
    return "[TOOL_CALLS] " + dumps([{"name": n, "arguments": a} for n, a in calls])


def _mistral_v11(calls: Sequence[Call]) -> str:
    return "".join(f"[TOOL_CALLS]{n}[ARGS]{dumps(a)}" for n, a in calls)


def _deepseek(calls: Sequence[Call]) -> str:
    body = "\n".join(
        f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{n}\n```json\n{dumps(a)}\n```<｜tool▁call▁end｜>"
        for n, a in calls
    )
    return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"


def _deepseek31(calls: Sequence[Call]) -> str:
    body = "".join(f"<｜tool▁call▁begin｜>{n}<｜tool▁sep｜>{dumps(a)}<｜tool▁call▁end｜>" for n, a in calls)
    return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"


def _dsml(block: str) -> Writer:
    def write(calls: Sequence[Call]) -> str:
        def param(k: str, v: object) -> str:
            kind = "true" if isinstance(v, str) else "false"
            return f'<｜DSML｜parameter name="{k}" string="{kind}">{xml_value(v)}</｜DSML｜parameter>\n'

        invokes = "".join(
            f'<｜DSML｜invoke name="{n}">\n{"".join(param(k, v) for k, v in a.items())}</｜DSML｜invoke>\n'
            for n, a in calls
        )
        return f"<｜DSML｜{block}>\n{invokes}</｜DSML｜{block}>"

    return write


def _glm(newlines: bool) -> Writer:
    nl = "\n" if newlines else ""

    def write(calls: Sequence[Call]) -> str:
        def params(args: dict[str, Any]) -> str:
            return "".join(
                f"<arg_key>{k}</arg_key>{nl}<arg_value>{xml_value(v)}</arg_value>{nl}"
                for k, v in args.items()
            )

        return "".join(f"<tool_call>{n}{nl}{params(a)}</tool_call>" for n, a in calls)

    return write


def _kimik2(calls: Sequence[Call]) -> str:
    body = "".join(
        f"<|tool_call_begin|>functions.{n}:{i}<|tool_call_argument_begin|>{dumps(a)}<|tool_call_end|>"
        for i, (n, a) in enumerate(calls)
    )
    return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"


def _minimax_value(value: object) -> str:
    return xml_value(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _minimax(calls: Sequence[Call]) -> str:
    def params(args: dict[str, Any]) -> str:
        return "".join(f'<parameter name="{k}">{_minimax_value(v)}</parameter>\n' for k, v in args.items())

    invokes = "".join(f'<invoke name="{n}">\n{params(a)}</invoke>\n' for n, a in calls)
    return f"<minimax:tool_call>\n{invokes}</minimax:tool_call>"


def _step3(calls: Sequence[Call]) -> str:
    def params(args: dict[str, Any]) -> str:
        return "".join(
            f'<steptml:parameter name="{k}">{xml_value(v)}</steptml:parameter>' for k, v in args.items()
        )

    body = "".join(
        f'<｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="{n}">{params(a)}</steptml:invoke>'
        "<｜tool_call_end｜>"
        for n, a in calls
    )
    return f"<｜tool_calls_begin｜>{body}<｜tool_calls_end｜>"


def _cohere(calls: Sequence[Call]) -> str:
    objs = [{"tool_name": n, "parameters": a} for n, a in calls]
    return f"<|START_ACTION|>{dumps(objs[0] if len(objs) == 1 else objs)}<|END_ACTION|>"


@dataclass(frozen=True)
class Format:
    id: str
    parser: str
    write: Writer
    # Model output that looks like the start of a call but is not one: must come out as normal text.
    bad: tuple[str, ...] = ()
    call_ids: Callable[[Sequence[Call]], list[str | None]] | None = None


FORMATS: tuple[Format, ...] = (
    Format("json", "json", _json, ('{"name": 42, "arguments": {}}', '{"nam": "f"}', '[{"name" "f"}]')),
    Format(
        "qwen",
        "qwen",
        _qwen,
        ("<tool_call>\nnot json\n</tool_call>", '<tool_call>\n{"arguments": {}}\n</tool_call>', "<tool_call"),
    ),
    Format(
        "qwen_xml",
        "qwen_xml",
        _qwen_xml,
        ("<tool_call>\n<func=get_weather>\n</tool_call>", "<tool_call>\n<function=bad name>", "<tool_call>x"),
    ),
    Format(
        "llama", "llama", _llama, ("<|python_tag|>print('hi')", '<|python_tag|>{"nam": 1}', "<|python_ta")
    ),
    Format("pythonic", "pythonic", _pythonic, ("[1, 2, 3]", "[see above]", "[get_weather", "[f x]")),
    Format("mistral", "mistral", _mistral, ("[TOOL_CALLS] hello", '[TOOL_CALLS] [{"x": 1}]', "[TOOL_CALL")),
    Format("mistral_v11", "mistral", _mistral_v11, ("[TOOL_CALLS]f[ARG]{}", "[TOOL_CALLS]f g[ARGS]{}")),
    Format("deepseek", "deepseek", _deepseek, ("<｜tool▁calls▁begin｜>oops<｜tool▁calls▁end｜>",)),
    Format(
        "deepseek31",
        "deepseek31",
        _deepseek31,
        ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sp｜>",),
    ),
    Format(
        "deepseek32", "deepseek32", _dsml("function_calls"), ("<｜DSML｜function_calls>\n<｜DSML｜call>",)
    ),
    Format("deepseek_v4", "deepseek_v4", _dsml("tool_calls"), ("<｜DSML｜tool_calls><invoke>",)),
    Format("glm45", "glm45", _glm(True), ("<tool_call>bad name here\n</tool_call>", "<tool_call>")),
    Format("glm47", "glm47", _glm(False), ("<tool_call>",)),
    Format(
        "kimik2",
        "kimik2",
        _kimik2,
        ("<|tool_calls_section_begin|><|tool_call_begin|>nonsense<|tool_call_argument_begin|>{}",),
        lambda calls: [f"functions.{n}:{i}" for i, (n, _) in enumerate(calls)],
    ),
    Format(
        "minimax_m2",
        "minimax_m2",
        _minimax,
        ("<minimax:tool_call><call>", '<minimax:tool_call><invoke nam="f">'),
    ),
    Format("step3", "step3", _step3, ("<｜tool_calls_begin｜><｜tool_call_begin｜>code<｜tool_sep｜>",)),
    Format(
        "cohere", "cohere", _cohere, ("<|START_ACTION|>not json<|END_ACTION|>", '<|START_ACTION|>{"x": 1}')
    ),
)


def schema_type(value: object) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else None


def tools_for(calls: Sequence[Call]) -> list[dict[str, Any]]:
    """OpenAI tool definitions whose schemas declare the types of the given arguments."""
    schemas: dict[str, dict[str, Any]] = {}
    for name, args in calls:
        props = schemas.setdefault(name, {})
        for key, value in args.items():
            kind = schema_type(value)
            props[key] = {"type": kind} if kind else {}
    return [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": p}}}
        for n, p in schemas.items()
    ]
