"""Constrained decoding in the reference worker: outputs that really match the schema or regex, over
the wire too; grammars refused; bad constraints are INVALID_ARGUMENT."""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
import pytest
from tokenizers import Tokenizer

from refworker.constraints import Constrainer, ConstraintError
from tests.refworker.calls import EOS, collect, completes, make_request, streamed_ids
from tests.refworker.conftest import StartWorker
from tests.schemas import conforms

PROMPT = [9707, 11, 1879, 0]
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
        "hourly": {"type": "boolean"},
    },
    "required": ["city", "unit", "days"],
}
TOOL_ARRAY = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "anyOf": [
            {
                "properties": {"name": {"type": "string", "enum": ["get_weather"]}, "parameters": WEATHER},
                "required": ["name", "parameters"],
            }
        ],
    },
}
NESTED = {
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3},
        "point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
        "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
    },
    "required": ["tags", "point", "note"],
}


@pytest.fixture(scope="module")
def constrainer(tokenizer: Tokenizer) -> Constrainer:
    return Constrainer(tokenizer)


@pytest.mark.parametrize("schema", [WEATHER, TOOL_ARRAY, NESTED, {"type": "integer"}])
def test_output_conforms_to_the_schema(constrainer: Constrainer, tokenizer: Tokenizer, schema: Any) -> None:
    ids = constrainer.output_ids("json_schema", json.dumps(schema))
    value = json.loads(tokenizer.decode(ids))
    assert conforms(value, schema), value
    assert constrainer.output_ids("json_schema", json.dumps(schema)) == ids  # deterministic


def test_conforms_is_not_vacuous() -> None:
    assert not conforms({"city": "P", "unit": "celsius", "days": 1}, WEATHER)  # minLength
    assert not conforms([], TOOL_ARRAY)
    assert not conforms({"tags": ["a"], "point": {"x": 1}, "note": None}, NESTED)
    assert not conforms({"tags": ["a", "b"], "point": {"x": 1}, "note": 3}, NESTED)
    assert not conforms([{"name": "other", "parameters": {}}], TOOL_ARRAY)


@pytest.mark.parametrize(
    "pattern", [r"\d{3}-[a-z]{2,}", "(yes|no|maybe)!", "你好[0-9]+", r"[A-Z][a-z]*\.\s?"]
)
def test_output_matches_the_regex(constrainer: Constrainer, tokenizer: Tokenizer, pattern: str) -> None:
    text = tokenizer.decode(constrainer.output_ids("regex", pattern))
    assert re.fullmatch(pattern, text), text


@pytest.mark.parametrize(
    ("kind", "value", "status"),
    [
        ("ebnf_grammar", 'root ::= "a"', "UNIMPLEMENTED"),
        ("structural_tag", "{}", "UNIMPLEMENTED"),
        ("regex", "(unclosed", "INVALID_ARGUMENT"),
        ("json_schema", '{"type": "frob"}', "INVALID_ARGUMENT"),
    ],
)
def test_constraints_it_cannot_serve(constrainer: Constrainer, kind: str, value: str, status: str) -> None:
    with pytest.raises(ConstraintError) as caught:
        constrainer.output_ids(kind, value)
    assert caught.value.status == status


@pytest.mark.parametrize("stream", [True, False])
async def test_generate_under_a_json_schema(
    start_worker: StartWorker, tokenizer: Tokenizer, stream: bool
) -> None:
    _, stub = await start_worker(script="fixed")  # the constraint overrides the script
    request = make_request(PROMPT, stream=stream, json_schema=json.dumps(WEATHER))
    messages = await collect(stub, request)
    ids = streamed_ids(messages) if stream else list(completes(messages)[0].output_ids)
    assert ids[-1] == EOS
    assert conforms(json.loads(tokenizer.decode(ids[:-1])), WEATHER)
    assert completes(messages)[0].finish_reason == "stop"


async def test_constrained_output_is_still_cut_by_max_new_tokens(start_worker: StartWorker) -> None:
    _, stub = await start_worker()
    messages = await collect(stub, make_request(PROMPT, json_schema=json.dumps(WEATHER), max_new_tokens=3))
    assert len(streamed_ids(messages)) == 3
    assert completes(messages)[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("ebnf_grammar", 'root ::= "a"', grpc.StatusCode.UNIMPLEMENTED),
        ("regex", "[z-a]", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_generate_refuses_what_it_cannot_enforce(
    start_worker: StartWorker, field: str, value: str, code: grpc.StatusCode
) -> None:
    _, stub = await start_worker()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub, make_request(PROMPT, **{field: value}))
    assert caught.value.code() == code
