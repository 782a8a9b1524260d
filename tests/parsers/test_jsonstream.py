"""The incremental JSON scanner: what is safe to hand out, and how a cut-off value is completed."""

from __future__ import annotations

import json

import pytest

from parsers.tools.grammar import FAIL, NEED
from parsers.tools.jsonstream import DONE, JsonStream


@pytest.mark.parametrize(
    ("text", "safe", "closed"),
    [
        ('{"a": 1, "b', '{"a": 1', '{"a": 1}'),
        ('{"a": "hel', '{"a": "hel', '{"a": "hel"}'),
        ('{"a": [1, 2', '{"a": [1', '{"a": [1, 2]}'),
        ('{"a": tr', "{", "{}"),
        ('{"a": {"b": null}, ', '{"a": {"b": null}', '{"a": {"b": null}}'),
        ('{"a": "x\\', '{"a": "x', '{"a": "x"}'),
        ('{"a": "x\\u00', '{"a": "x', '{"a": "x"}'),
        ("{", "{", "{}"),
    ],
)
def test_safe_prefix_and_completion(text: str, safe: str, closed: str) -> None:
    stream = JsonStream()
    status, consumed = stream.feed(text)
    assert status == NEED
    assert stream.take() == safe
    assert safe + stream.close(text[consumed:]) == closed
    json.loads(closed)


def test_value_end_and_rest() -> None:
    stream = JsonStream()
    assert stream.feed('{"a": [1, {"b": "}"}]} tail') == (DONE, 22)
    assert stream.take() == '{"a": [1, {"b": "}"}]}'


@pytest.mark.parametrize(
    ("text", "at"), [('{"a" 1}', 5), ("{,}", 1), ('{"a": 1,}', 8), ("[1 2]", 3), ('{"a": @}', 6)]
)
def test_invalid_json_fails_where_it_breaks(text: str, at: int) -> None:
    assert JsonStream().feed(text) == (FAIL, at)


def test_lenient_strings() -> None:
    stream = JsonStream()
    stream.feed('{"a": "line\nbreak \\q"}')
    assert json.loads(stream.take()) == {"a": "line\nbreak \\q"}
