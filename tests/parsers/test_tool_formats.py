"""Format-specific behaviour the conformance suite does not reach: typing rules, ids, variants."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from parsers import ToolCallDelta, make_tool_parser
from parsers.tools.jsonstream import DONE, JsonStream
from tests.parsers.formats import tools_for
from tests.parsers.streaming import Outcome, complete, every_way, random_pieces, stream


def calls(parser: str, text: str, tools: list[dict[str, Any]] | None = None) -> list[tuple[str, Any]]:
    return [(name, json.loads(args)) for name, args, _ in every_way(parser, text, tools).calls]


def test_qwen_hermes_example() -> None:
    text = 'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Beijing"}}\n</tool_call>'
    out = every_way("qwen", text)
    assert out == Outcome("Sure.\n", (("get_weather", '{"city": "Beijing"}', None),))


@pytest.mark.parametrize(
    ("envelope", "args"),
    [
        ('{"name": "f", "arguments": "{\\"a\\": 1}"}', {"a": 1}),  # arguments as a JSON string
        ('{"name": "f", "id": "call_1", "arguments": {"a": 1}, "extra": [1, {"x": "}"}]}', {"a": 1}),
        ('{"type": "function", "name": "f", "parameters": {"a": 1}}', {"a": 1}),
        ('{"name": "f", "arguments": null}', {}),
        ('{"name": "f"}', {}),
    ],
)
def test_envelope_variants(envelope: str, args: dict[str, Any]) -> None:
    assert calls("qwen", f"<tool_call>{envelope}</tool_call>") == [("f", args)]
    assert calls("json", envelope) == [("f", args)]


def test_json_finds_calls_anywhere() -> None:
    text = 'I will call {"name": "a", "parameters": {"x": 1}} and then [{"name": "b", "arguments": {}}].'
    out = every_way("json", text)
    assert out.normal == "I will call  and then ."
    assert [c[0] for c in out.calls] == ["a", "b"]


def test_llama_bare_json_and_semicolons() -> None:
    text = '{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {"y": [2]}}'
    assert calls("llama", text) == [("a", {"x": 1}), ("b", {"y": [2]})]
    assert calls("llama", "<|python_tag|>" + text) == [("a", {"x": 1}), ("b", {"y": [2]})]


def test_mistral_variants_and_call_id() -> None:
    assert calls("mistral", '[TOOL_CALLS] {"name": "a", "arguments": {"x": 1}}') == [("a", {"x": 1})]
    out = every_way("mistral", '[TOOL_CALLS]a[CALL_ID]Xy12AbC9z[ARGS]{"x": 1}[TOOL_CALLS]b[ARGS]{}')
    assert out.calls == (("a", '{"x": 1}', "Xy12AbC9z"), ("b", "{}", None))


def test_kimik2_ids() -> None:
    text = (
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.search:0<|tool_call_argument_begin|>"
        '{"q": "x"}<|tool_call_end|><|tool_call_begin|>fetch:1 <|tool_call_argument_begin|>{}'
        "<|tool_call_end|><|tool_calls_section_end|>"
    )
    out = every_way("kimik2", text)
    assert out.calls == (("search", '{"q": "x"}', "functions.search:0"), ("fetch", "{}", "fetch:1"))


def test_deepseek_v3_example() -> None:
    text = (
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        '{"location": "Tokyo"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    )
    assert calls("deepseek", text) == [("get_weather", {"location": "Tokyo"})]
    # V3.1 markers without the section begin, as SMG also accepts
    text31 = '<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"location": "Tokyo"}<｜tool▁call▁end｜>'
    assert calls("deepseek31", text31) == [("get_weather", {"location": "Tokyo"})]


def _qwen_xml(value: str) -> str:
    return f"<tool_call>\n<function=f>\n<parameter=v>\n{value}\n</parameter>\n</function>\n</tool_call>"


@pytest.mark.parametrize(
    ("raw", "inferred"),
    [
        ("5", 5),
        ("-2.5", -2.5),
        ("true", True),
        ("True", True),
        ("None", None),
        ("null", None),
        ('"quoted"', "quoted"),
        ("[1, 2]", [1, 2]),
        ('{"a": {"b": 1}}', {"a": {"b": 1}}),
        ("007", "007"),
        ("abc", "abc"),
        ("true story", "true story"),
        ("Infinity", "Infinity"),
        ("a &amp; b", "a &amp; b"),  # Qwen's values are literal: no entity decoding
        ("", ""),
    ],
)
def test_qwen_xml_infers_undeclared_values(raw: str, inferred: object) -> None:
    assert calls("qwen_xml", _qwen_xml(raw)) == [("f", {"v": inferred})]


@pytest.mark.parametrize(
    ("declared", "raw", "value"),
    [
        ("string", "5", "5"),
        ("string", "true", "true"),
        ("integer", "12", 12),
        ("integer", "twelve", "twelve"),  # does not fit: inferred
        ("number", "1e3", 1000.0),
        ("boolean", "False", False),
        ("object", '{"k": [1]}', {"k": [1]}),
        ("array", "[]", []),
        ("array", "{}", {}),
    ],
)
def test_qwen_xml_types_values_by_schema(declared: str, raw: str, value: object) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"properties": {"v": {"type": declared}}}},
        }
    ]
    assert calls("qwen_xml", _qwen_xml(raw), tools) == [("f", {"v": value})]


def test_qwen_xml_missing_closing_tags() -> None:
    text = "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n</function>"
    assert every_way("qwen_xml", text) == Outcome("", (("f", '{"a": 1}', None),))
    assert every_way("qwen_xml", text + "\n</tool_ca") == Outcome("", (("f", '{"a": 1}', None),))


def test_glm47_without_newlines() -> None:
    text = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Beijing</arg_value></tool_call>"
    assert calls("glm47", text) == [("get_weather", {"city": "Beijing"})]
    assert calls("glm45", "<tool_call>get_time\n</tool_call>") == [("get_time", {})]


def test_minimax_decodes_entities_and_runs_parallel_invokes() -> None:
    text = (
        "<minimax:tool_call>\n<invoke name='a'>\n<parameter name=\"q\">x &lt; y &amp;&amp; z</parameter>\n"
        '</invoke>\n<invoke name="b">\n</invoke>\n</minimax:tool_call>'
    )
    assert calls("minimax_m2", text) == [("a", {"q": "x < y && z"}), ("b", {})]


def test_dsml_string_attribute() -> None:
    body = (
        '<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="s" string="true">42</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="n" string="false">42</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
    )
    assert calls("deepseek32", f"<｜DSML｜function_calls>\n{body}</｜DSML｜function_calls>") == [
        ("f", {"s": "42", "n": 42})
    ]
    assert calls("deepseek_v4", f"<｜DSML｜tool_calls>\n{body}</｜DSML｜tool_calls>") == [
        ("f", {"s": "42", "n": 42})
    ]


def test_cohere_drops_response_markers_and_accepts_name_keys() -> None:
    text = (
        "<|START_RESPONSE|>Let me look.<|END_RESPONSE|>"
        '<|START_ACTION|>{"name": "search", "arguments": {"q": "x"}}<|END_ACTION|>'
    )
    out = every_way("cohere", text)
    assert out == Outcome("Let me look.", (("search", '{"q": "x"}', None),))


def test_pythonic_literals() -> None:
    text = (
        "<|python_start|>[f(a='x\\x41\\u00e9\\N{BULLET}\\101\\'\"', b=(1, 2.5), c={'k': [True, None]}, "
        "d='''tri\"ple''', e=-3, g=\"\", h='a\\\\b')]<|python_end|>"
    )
    assert calls("pythonic", text) == [
        (
            "f",
            {
                "a": "xAé•A'\"",
                "b": [1, 2.5],
                "c": {"k": [True, None]},
                "d": 'tri"ple',
                "e": -3,
                "g": "",
                "h": "a\\b",
            },
        )
    ]


def test_pythonic_positional_argument_ends_the_call() -> None:
    out = every_way("pythonic", "[f(a=1, 2)] after")
    assert out == Outcome(" 2)] after", (("f", '{"a": 1}', None),))


def test_malformed_arguments_after_the_name_close_the_call() -> None:
    out = every_way("qwen", '<tool_call>{"name": "f", "arguments": {"a": 1, "b": tru}}</tool_call> after')
    assert out.calls == (("f", '{"a": 1}', None),)
    assert out.normal.endswith("</tool_call> after")


def test_deltas_name_first_then_fragments() -> None:
    parser = make_tool_parser("qwen")
    first = parser.feed('<tool_call>{"name": "f", "arguments": {"text": "abc')
    assert first.calls == [ToolCallDelta(0, "f", '{"text": "abc')]
    assert parser.feed('def"}}</tool_call>').calls == [ToolCallDelta(0, None, 'def"}')]
    assert parser.finish().calls == []


def test_tools_restrict_names_and_type_values() -> None:
    tools = tools_for([("get_weather", {"city": "x", "days": 1})])
    text = "<tool_call>get_weather\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>"
    assert calls("glm45", text, tools) == [("get_weather", {"days": 3})]
    assert every_way("glm45", text.replace("get_weather", "get_wether"), tools).calls == ()


_BIG, _DEEP = "9" * 5000, "[" * 50000 + "]" * 50000
_TYPED = [
    {
        "function": {
            "name": "f",
            "parameters": {"properties": {"n": {"type": "integer"}, "o": {"type": "object"}}},
        }
    }
]


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        ("qwen_xml", f"<tool_call><function=f><parameter=n>{_BIG}</parameter></function></tool_call>"),
        ("qwen_xml", f"<tool_call><function=f><parameter=o>{_DEEP}</parameter></function></tool_call>"),
        ("qwen_xml", f"<tool_call><function=f><parameter=x>{_DEEP}</parameter></function></tool_call>"),
        ("pythonic", f"[f(x={_BIG}, y={_DEEP})]"),
        ("qwen", f'<tool_call>{{"name": "f", "arguments": {{"x": {_BIG}, "y": {_DEEP}}}}}</tool_call>'),
        ("qwen", f'<tool_call>{{"name": "f", "arguments": "{_DEEP}"}}</tool_call>'),
    ],
)
def test_pathological_values_never_raise(parser: str, text: str) -> None:
    out = complete(parser, text, _TYPED)
    assert [c[0] for c in out.calls] == ["f"]
    args = out.calls[0][1]  # too deep for json.loads: the scanner checks it is one whole object
    assert args.startswith("{") and JsonStream().feed(args) == (DONE, len(args))
    assert stream(make_tool_parser(parser, _TYPED), random_pieces(text, random.Random(0), 4000)) == out
