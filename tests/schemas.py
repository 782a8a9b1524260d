"""A JSON-schema check for the keywords the constrained-output tests use (no validator library here)."""

from __future__ import annotations

from typing import Any


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """A JSON-schema check for the keywords these tests use."""
    if schema.get("anyOf"):
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return any(conforms(value, rest | option) for option in schema["anyOf"])
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if kind is not None and not checks[kind](value):
        return False
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        if not set(schema.get("required", [])) <= set(value) or not set(value) <= set(properties):
            return False
        return all(conforms(v, properties[k]) for k, v in value.items())
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            return False
        return all(conforms(v, schema.get("items", {})) for v in value)
    if isinstance(value, str):
        return len(value) >= schema.get("minLength", 0)
    if isinstance(value, int | float) and "minimum" in schema:
        return bool(value >= schema["minimum"])
    return True
