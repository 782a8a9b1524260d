"""Constraints: checked with outlines-core (bad ones are 400s naming the parameter), the tool-call
schemas of smg-behavior.md §5.2, and how they travel in SGLang's SamplingParams."""

from __future__ import annotations

import json
import time

import outlines_core
import pytest

from dataplane import constraints
from dataplane.client import _encode
from dataplane.errors import InvalidRequest
from dataplane.types import Constraint, SamplingParams, ToolChoice, WireRequest

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}
NO_ARGS = {"type": "function", "function": {"name": "ping"}}


def test_json_schema_keeps_the_schema_compact() -> None:
    assert constraints.json_schema(CITY, param="response_format") == Constraint(
        "json_schema", '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}'
    )


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "frob"},
        {"type": "object", "properties": 3},
        {"$ref": "#/$defs/missing"},
        {"type": "string", "pattern": "(?<=a)b"},  # a pattern outlines-core cannot compile
        "not an object",
    ],
)
def test_unusable_schemas_are_400s_naming_the_parameter(schema: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        constraints.json_schema(schema, param="response_format")
    assert caught.value.param == "response_format"
    assert "response_format" in caught.value.message


def test_json_schema_text_must_be_json() -> None:
    assert (
        constraints.json_schema_text('{"type": "integer"}', param="json_schema").value == '{"type":"integer"}'
    )
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        constraints.json_schema_text("{oops", param="json_schema")


@pytest.mark.parametrize("pattern", ["(", "a)", "[z-a]", r"\p{NoSuchClass}", "(?P<x>a)(?P=x)"])
def test_bad_regexes_are_400s(pattern: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        constraints.regex(pattern, param="regex")
    assert caught.value.param == "regex"


def test_regex_check_is_syntax_only_and_fast() -> None:
    # Its automaton would take seconds to build (the worker's job); the check takes microseconds.
    start = time.perf_counter()
    assert constraints.regex("(a|b)*a(a|b){40}x", param="regex").kind == "regex"
    huge = outlines_core.json_schema.build_regex_from_schema(json.dumps({"type": "object"}))
    assert constraints.regex(huge, param="regex").kind == "regex"
    assert time.perf_counter() - start < 0.5


def test_ebnf_is_passed_as_given() -> None:
    assert constraints.ebnf('root ::= "a"', param="ebnf") == Constraint("ebnf", 'root ::= "a"')
    with pytest.raises(InvalidRequest):
        constraints.ebnf("  ", param="ebnf")


def test_auto_and_none_constrain_nothing() -> None:
    for mode in ("auto", "none"):
        assert constraints.tool_constraint([WEATHER], ToolChoice(mode)) is None  # type: ignore[arg-type]


def test_named_function_is_its_parameters() -> None:
    named = constraints.tool_constraint([WEATHER, NO_ARGS], ToolChoice("function", "get_weather"))
    assert named is not None and json.loads(named.value) == CITY
    bare = constraints.tool_constraint([WEATHER, NO_ARGS], ToolChoice("function", "ping"))
    assert bare is not None and json.loads(bare.value) == {"type": "object", "properties": {}}


def test_required_is_an_array_of_named_calls() -> None:
    required = constraints.tool_constraint([WEATHER, NO_ARGS], ToolChoice("required"))
    assert required is not None
    schema = json.loads(required.value)
    assert schema["type"] == "array" and schema["minItems"] == 1 and "maxItems" not in schema
    items = schema["items"]["anyOf"]
    assert [i["properties"]["name"]["enum"] for i in items] == [["get_weather"], ["ping"]]
    assert items[0]["properties"]["parameters"] == CITY
    assert all(i["required"] == ["name", "parameters"] for i in items)
    single = constraints.tool_constraint([WEATHER], ToolChoice("required"), parallel=False)
    assert single is not None and json.loads(single.value)["maxItems"] == 1


def test_required_merges_defs_and_refuses_conflicts() -> None:
    def tool(name: str, unit: object) -> dict[str, object]:
        parameters = {
            "type": "object",
            "properties": {"t": {"$ref": "#/$defs/unit"}},
            "required": ["t"],
            "$defs": {"unit": unit},
        }
        return {"type": "function", "function": {"name": name, "parameters": parameters}}

    same = {"type": "string", "enum": ["c", "f"]}
    merged = constraints.tool_constraint([tool("a", same), tool("b", same)], ToolChoice("required"))
    assert merged is not None and json.loads(merged.value)["$defs"] == {"unit": same}
    with pytest.raises(InvalidRequest, match="conflicting") as caught:
        constraints.tool_constraint([tool("a", same), tool("b", {"type": "integer"})], ToolChoice("required"))
    assert caught.value.param == "tools"


@pytest.mark.parametrize(
    ("constraint", "field"),
    [
        (Constraint("json_schema", '{"type":"object"}'), "json_schema"),
        (Constraint("regex", "[0-9]+"), "regex"),
        (Constraint("ebnf", 'root ::= "a"'), "ebnf_grammar"),
        (Constraint("structural_tag", "{}"), "structural_tag"),
        (None, None),
    ],
)
def test_constraint_travels_in_the_sglang_oneof(constraint: Constraint | None, field: str | None) -> None:
    wire = WireRequest("r", [1, 2], "hi", SamplingParams(), (), stream=False, constraint=constraint)
    params = _encode(wire).sampling_params
    assert params.WhichOneof("constraint") == field
    if constraint is not None:
        assert getattr(params, field or "") == constraint.value
