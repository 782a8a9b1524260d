"""Structured-output constraints, built from a request and checked with outlines-core before any worker
sees them: a bad schema or regex is the client's 400, not a worker failure.

A JSON schema is checked by converting it to outlines-core's regex, and a regex (the client's, or the one
a schema becomes) by compiling its syntax. Only the syntax: turning a regex into its automaton can take
seconds (about 4 s for ``{"type": "object"}``) and is the worker's work. outlines-core has no grammars,
so an EBNF grammar reaches the worker as given.

Tool calls (smg-behavior.md §5.2): ``tool_choice`` ``required`` constrains the output to a JSON array
of ``{"name", "parameters"}`` objects, one of the tools each; a named function to that function's
parameters. The caller parses such output as JSON (``dataplane.parsing``), not with the model's parser.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import outlines_core

from dataplane.errors import InvalidRequest
from dataplane.types import Constraint, JsonObject, ToolChoice

JSON_OBJECT_SCHEMA: Mapping[str, Any] = {"type": "object"}  # response_format json_object, as SMG sends it
_EMPTY_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}}


def json_schema(schema: object, *, param: str) -> Constraint:
    """A ``json_schema`` constraint; 400 naming ``param`` when outlines-core cannot use the schema."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"'{param}': a JSON schema must be an object", param=param)
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    if (problem := _schema_problem(text)) is not None:
        raise InvalidRequest(f"'{param}' is not a usable JSON schema: {problem}", param=param)
    return Constraint("json_schema", text)


def json_schema_text(text: str, *, param: str) -> Constraint:
    """A ``json_schema`` constraint from the schema's JSON text (SGLang's string form)."""
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"'{param}' is not valid JSON: {exc}", param=param) from None
    return json_schema(schema, param=param)


def regex(pattern: str, *, param: str) -> Constraint:
    if not pattern:
        raise InvalidRequest(f"'{param}' must not be empty", param=param)
    if (problem := _regex_problem(pattern)) is not None:
        raise InvalidRequest(f"'{param}' is not a valid regular expression: {problem}", param=param)
    return Constraint("regex", pattern)


def ebnf(grammar: str, *, param: str) -> Constraint:
    if not grammar.strip():
        raise InvalidRequest(f"'{param}' must not be empty", param=param)
    return Constraint("ebnf", grammar)


def tool_constraint(
    tools: Sequence[JsonObject], choice: ToolChoice, *, parallel: bool = True
) -> Constraint | None:
    """What ``tool_choice`` asks the worker to enforce: nothing for ``auto``/``none``."""
    if not tools or choice.mode in ("auto", "none"):
        return None
    if choice.mode == "function":
        tool = next((t for t in tools if _function(t).get("name") == choice.function), None)
        if tool is None:
            raise InvalidRequest(f"function {choice.function!r} is not in 'tools'", param="tool_choice")
        return _tool_parameters(tool)
    items: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for tool in tools:
        name = _function(tool).get("name")
        parameters = _parameters(tool)
        _tool_parameters(tool)  # names the culprit before the array's schema is built
        for key, value in (parameters.get("$defs") or {}).items():
            if defs.setdefault(key, value) != value:
                raise InvalidRequest(
                    f"tools: the definition {key!r} has conflicting schemas in different tools", param="tools"
                )
        items.append(
            {
                "properties": {"name": {"type": "string", "enum": [name]}, "parameters": parameters},
                "required": ["name", "parameters"],
            }
        )
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": items}}
    if not parallel:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs  # the tools' "#/$defs/…" references resolve from the root
    return json_schema(schema, param="tools")


def _tool_parameters(tool: JsonObject) -> Constraint:
    parameters = _parameters(tool)
    text = json.dumps(parameters, ensure_ascii=False, separators=(",", ":"))
    if (problem := _schema_problem(text)) is not None:
        name = _function(tool).get("name")
        raise InvalidRequest(f"tools: function {name!r} has unusable parameters: {problem}", param="tools")
    return Constraint("json_schema", text)


def _function(tool: JsonObject) -> Mapping[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, Mapping) else tool


def _parameters(tool: JsonObject) -> Mapping[str, Any]:
    parameters = _function(tool).get("parameters")
    return parameters if isinstance(parameters, Mapping) else _EMPTY_PARAMETERS


@functools.lru_cache(maxsize=1024)
def _schema_problem(text: str) -> str | None:
    try:
        pattern = outlines_core.json_schema.build_regex_from_schema(text)
    except (ValueError, TypeError, OverflowError) as exc:
        return str(exc)
    return _regex_problem(pattern)


@functools.lru_cache(maxsize=1024)
def _regex_problem(pattern: str) -> str | None:
    # `{0}`: the pattern is parsed and translated (every syntax error surfaces) but adds no state to the
    # automaton, so a pattern whose automaton would explode is still checked in microseconds.
    try:
        outlines_core.Index(f"(?:{pattern}){{0}}", _byte_vocabulary())
    except ValueError as exc:
        return str(exc)
    return None


@functools.cache
def _byte_vocabulary() -> Any:
    return outlines_core.Vocabulary(256, {bytes([b]): [b] for b in range(256)})
