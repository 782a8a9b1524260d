"""Bad input: OpenAI-style error JSON with the right status, seen through the official client's
exception types and as raw HTTP; the gateway keeps serving afterwards."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from refworker.scripts import FIXED_TEXT
from tests.e2e.conftest import MODEL, Deployment, GatewayServer, gateway_config, wait_idle

HI = [{"role": "user", "content": "hi"}]
CONTEXT_LENGTH = 131072  # Qwen3's model_max_length
IMAGE = {"url": "data:image/png;base64,AAAA"}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

# (keyword arguments of chat.completions.create, status, param the error names)
CHAT_CASES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("empty model", {"model": ""}, 400, "model"),
    ("empty messages", {"messages": []}, 400, "messages"),
    ("bad role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    ("message not an object", {"messages": ["hi"]}, 400, "messages[0]"),
    ("missing content", {"messages": [{"role": "user"}]}, 400, "messages[0].content"),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": IMAGE}]}]},
     400, "messages[0].content"),
    ("temperature string", {"temperature": "hot"}, 400, "temperature"),
    ("temperature too high", {"temperature": 2.5}, 400, "temperature"),
    ("n=0", {"n": 0}, 400, "n"),
    ("n=11", {"n": 11}, 400, "n"),
    ("n not int", {"n": 1.5}, 400, "n"),
    ("max_tokens=0", {"max_tokens": 0}, 400, "max_tokens"),
    ("max_completion_tokens=0", {"max_completion_tokens": 0}, 400, "max_completion_tokens"),
    ("top_logprobs without logprobs", {"top_logprobs": 2}, 400, "top_logprobs"),
    ("top_logprobs=21", {"logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
    ("stop not strings", {"stop": [1, 2]}, 400, "stop"),
    ("stream not bool", {"stream": "yes"}, 400, "stream"),
    ("stream_options without stream", {"stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("unknown parameter", {"extra_body": {"frobnicate": 1}}, 400, "frobnicate"),
    ("response_format bad schema",
     {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frob"}}}},
     400, "response_format"),
    ("response_format schema without name",
     {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
     400, "response_format"),
    ("response_format unknown type", {"response_format": {"type": "yaml"}}, 400, "response_format"),
    ("bad regex", {"extra_body": {"regex": "(unclosed"}}, 400, "regex"),
    ("two constraints", {"response_format": {"type": "json_object"}, "extra_body": {"regex": "a+"}},
     400, "response_format"),
    ("tool_choice without tools", {"tool_choice": "required"}, 400, "tool_choice"),
    ("tool_choice names a missing function",
     {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "tool_choice"),
    ("tool_choice garbage", {"tools": [TOOL], "tool_choice": "sometimes"}, 400, "tool_choice"),
    ("required tool with a bad schema",
     {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "frob"}}}],
      "tool_choice": "required"}, 400, "tools"),
    ("stream_reasoning not a bool", {"extra_body": {"stream_reasoning": "no"}}, 400, "stream_reasoning"),
    ("malformed tool", {"tools": [{"type": "function"}]}, 400, "tools"),
    ("audio", {"extra_body": {"audio": {"voice": "alloy", "format": "wav"}}}, 400, "audio"),
    ("unknown model", {"model": "no/such-model"}, 404, "model"),
    ("max_tokens beyond the context", {"max_tokens": CONTEXT_LENGTH + 1}, 400, None),
    ("prompt beyond the context", {"messages": [{"role": "user", "content": " a" * (CONTEXT_LENGTH + 10)}]},
     400, "messages"),
]  # fmt: skip

# Unknown and unsupported parameters: the message itself says which one.
NAMED_IN_MESSAGE = {
    "frobnicate", "response_format", "tool_choice", "audio", "suffix", "best_of", "tools", "regex",
    "stream_reasoning",
}  # fmt: skip
EXCEPTIONS = {400: openai.BadRequestError, 404: openai.NotFoundError}


def assert_error_body(body: Any, status: int) -> dict[str, Any]:
    """``{"error": {"message", "type", "code", "param"}}``, as OpenAI sends it."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "code", "param"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if status == 400:
        assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("kwargs", "status", "param"), [c[1:] for c in CHAT_CASES], ids=[c[0] for c in CHAT_CASES]
)
async def test_bad_chat_request(
    client: openai.AsyncOpenAI, kwargs: dict[str, Any], status: int, param: str | None
) -> None:
    request: dict[str, Any] = {"model": MODEL, "messages": HI} | kwargs
    with pytest.raises(EXCEPTIONS[status]) as caught:
        await client.chat.completions.create(**request)
    exc = caught.value
    assert exc.status_code == status
    assert exc.response.headers["content-type"].startswith("application/json")
    error = assert_error_body(exc.response.json(), status)
    if param is not None:
        assert error["param"] == param, error
    if param in NAMED_IN_MESSAGE:
        assert param in error["message"], error


@pytest.mark.parametrize("stream", [False, True])
async def test_unknown_model_is_model_not_found(client: openai.AsyncOpenAI, stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="no/such-model", messages=HI, stream=stream)  # type: ignore[call-overload]
    assert caught.value.code == "model_not_found"


COMPLETION_CASES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("suffix", {"suffix": " the end"}, 400, "suffix"),
    ("best_of", {"best_of": 2}, 400, "best_of"),
    ("max_tokens=0", {"max_tokens": 0}, 400, "max_tokens"),
    ("empty prompt list", {"prompt": []}, 400, "prompt"),
    ("mixed prompt list", {"prompt": ["a", [1, 2]]}, 400, "prompt"),
    ("token id outside the vocabulary", {"prompt": [1, 10**9]}, 400, "prompt"),
    ("empty prompt", {"prompt": ""}, 400, "prompt"),
    ("logprobs=6", {"logprobs": 6}, 400, "logprobs"),
    ("chat parameter", {"extra_body": {"tools": [TOOL]}}, 400, "tools"),
    ("json_schema not JSON", {"extra_body": {"json_schema": "{nope"}}, 400, "json_schema"),
    ("regex and ebnf", {"extra_body": {"regex": "a+", "ebnf": "root ::= 'a'"}}, 400, "regex"),
    ("unknown model", {"model": "no/such-model"}, 404, "model"),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "param"), [c[1:] for c in COMPLETION_CASES], ids=[c[0] for c in COMPLETION_CASES]
)
async def test_bad_completion_request(
    client: openai.AsyncOpenAI, kwargs: dict[str, Any], status: int, param: str | None
) -> None:
    request: dict[str, Any] = {"model": MODEL, "prompt": "hi"} | kwargs
    with pytest.raises(EXCEPTIONS[status]) as caught:
        await client.completions.create(**request)
    error = assert_error_body(caught.value.response.json(), status)
    assert caught.value.status_code == status
    if param is not None:
        assert error["param"] == param, error
    if param in NAMED_IN_MESSAGE:
        assert param in error["message"], error


# (method, path, raw body, status): what the client library cannot even send.
RAW_CASES: list[tuple[str, str, str, bytes | None, int]] = [
    ("invalid JSON", "POST", "/v1/chat/completions", b'{"model": "x", "messages": [', 400),
    ("body is an array", "POST", "/v1/chat/completions", b"[1, 2]", 400),
    ("body is a string", "POST", "/v1/completions", b'"hi"', 400),
    ("empty body", "POST", "/v1/chat/completions", b"", 400),
    ("missing model", "POST", "/v1/chat/completions", b'{"messages": [{"role": "user"}]}', 400),
    ("missing messages", "POST", "/v1/chat/completions", b'{"model": "Qwen/Qwen3-0.6B"}', 400),
    ("missing prompt", "POST", "/v1/completions", b'{"model": "Qwen/Qwen3-0.6B"}', 400),
    ("invalid UTF-8", "POST", "/v1/chat/completions", b'{"model": "\xff\xfe"}', 400),
    ("GET on chat", "GET", "/v1/chat/completions", None, 405),
    ("DELETE on models", "DELETE", "/v1/models", None, 405),
    ("unknown path", "POST", "/v1/nope", b"{}", 404),
    ("unknown GET path", "GET", "/nope", None, 404),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "status"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES]
)
async def test_bad_raw_request(
    http: aiohttp.ClientSession, shared: Deployment, method: str, path: str, body: bytes | None, status: int
) -> None:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    async with http.request(method, shared.url + path, data=body, headers=headers) as reply:
        assert reply.status == status
        assert reply.content_type == "application/json"
        assert_error_body(await reply.json(), status)
        if status == 405:
            assert reply.headers.get("Allow")


async def test_gateway_still_serves_after_bad_requests(
    client: openai.AsyncOpenAI, http: aiohttp.ClientSession, shared: Deployment
) -> None:
    async def bad_chat(kwargs: dict[str, Any]) -> None:
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(**({"model": MODEL, "messages": HI} | kwargs))

    async def bad_raw(method: str, path: str, body: bytes | None) -> None:
        async with http.request(method, shared.url + path, data=body) as reply:
            assert reply.status >= 400

    # All at once, alongside good requests.
    await asyncio.gather(
        *(bad_chat(c[1]) for c in CHAT_CASES),
        *(bad_raw(*c[1:4]) for c in RAW_CASES),
        *(client.chat.completions.create(model=MODEL, messages=HI) for _ in range(4)),
    )
    reply = await client.chat.completions.create(model=MODEL, messages=HI)
    assert reply.choices[0].message.content == FIXED_TEXT
    await wait_idle(http, shared)


async def test_payload_too_large(http: aiohttp.ClientSession, model_dir: Path) -> None:
    small = GatewayServer(gateway_config([("127.0.0.1", 1)], model_dir, max_payload_size=4096)).start()
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 10_000}]}
        async with http.post(f"{small.url}/v1/chat/completions", json=body) as reply:
            assert reply.status == 413
            assert reply.content_type == "application/json"
            assert_error_body(await reply.json(), 413)
    finally:
        await asyncio.to_thread(small.stop)
