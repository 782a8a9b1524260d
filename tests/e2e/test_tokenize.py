"""``/v1/tokenize``, ``/v1/detokenize`` and ``/v1/tokenizers`` over HTTP, behind real workers.

The official ``openai`` client has no tokenize call, so these use aiohttp as a client of that API would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import openai
import pytest

from dataplane.tokenizer import ModelTokenizer
from tests.e2e.conftest import MODEL, Deployment, find_request, new_rid

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2? [ref script=fixed]"},
]


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url, json=body) as reply:
        assert reply.content_type == "application/json", await reply.text()
        return reply.status, await reply.json()


async def test_tokenize_a_prompt(
    http: aiohttp.ClientSession, shared: Deployment, qwen: ModelTokenizer
) -> None:
    text = "Hello <|im_end|> wörld 🤖"
    status, body = await post(http, f"{shared.url}/v1/tokenize", {"model": MODEL, "prompt": text})
    ids = qwen.tokenizer.encode(text, add_special_tokens=False).ids
    assert (status, body) == (200, {"tokens": ids, "count": len(ids), "char_count": len(text)})
    assert 151645 in ids  # the added token is one id, as SMG tokenizes it


async def test_tokenize_a_batch(
    http: aiohttp.ClientSession, shared: Deployment, qwen: ModelTokenizer
) -> None:
    prompts = ["a", "b c", "", "你好"]
    status, body = await post(
        http, f"{shared.url}/v1/tokenize", {"model": MODEL, "prompt": prompts, "return_token_strs": True}
    )
    ids = [qwen.tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
    assert status == 200
    assert body["tokens"] == ids
    assert body["count"] == [len(i) for i in ids]
    assert body["char_count"] == [1, 3, 0, 2]
    assert body["token_strs"][1] == ["b", "Ġc"]


async def test_tokenize_messages_gives_the_ids_a_chat_completion_sends(
    http: aiohttp.ClientSession, shared: Deployment
) -> None:
    kwargs = {"enable_thinking": False}
    status, body = await post(
        http,
        f"{shared.url}/v1/tokenize",
        {"model": MODEL, "messages": CHAT, "chat_template_kwargs": kwargs},
    )
    assert status == 200 and body["max_model_len"] == 131072  # tokenizer_config.json model_max_length
    rid = new_rid("tok")
    client = openai.AsyncOpenAI(base_url=f"{shared.url}/v1", api_key="none", max_retries=0)
    async with client:
        await client.chat.completions.create(
            model=MODEL,
            messages=CHAT,  # type: ignore[arg-type]
            max_tokens=2,
            extra_body={"chat_template_kwargs": kwargs},
            extra_headers={"x-request-id": rid},
        )
    _, sent = find_request(shared, rid)
    assert body["tokens"] == [int(i) for i in sent["tokenized"]["input_ids"]]
    assert body["count"] == len(body["tokens"]) and body["char_count"] == len(
        sent["tokenized"]["original_text"]
    )


async def test_detokenize(http: aiohttp.ClientSession, shared: Deployment, qwen: ModelTokenizer) -> None:
    ids = qwen.encode("<|im_start|>Hi there")
    url = f"{shared.url}/v1/detokenize"
    assert await post(http, url, {"model": MODEL, "tokens": ids}) == (200, {"text": "Hi there"})
    keep = {"model": MODEL, "tokens": [ids, []], "skip_special_tokens": False}
    assert await post(http, url, keep) == (200, {"text": ["<|im_start|>Hi there", ""]})


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "param"),
    [
        ("tokenize", {"model": "nope", "prompt": "x"}, 404, "model_not_found", "model"),
        ("tokenize", {"model": MODEL}, 400, "invalid_request_error", "prompt"),
        (
            "tokenize",
            {"model": MODEL, "prompt": "x", "messages": CHAT},
            400,
            "invalid_request_error",
            "prompt",
        ),
        ("tokenize", {"model": MODEL, "prompt": [1, 2]}, 400, "invalid_request_error", "prompt"),
        ("tokenize", {"model": MODEL, "prompt": "x", "tools": []}, 400, "invalid_request_error", "tools"),
        ("tokenize", {"model": MODEL, "prompt": "x", "stream": True}, 400, "unsupported_parameter", "stream"),
        ("tokenize", {"prompt": "x"}, 400, "invalid_request_error", "model"),
        ("tokenize", {"model": MODEL, "messages": [{"role": "robot"}]}, 400, "invalid_request_error", None),
        ("detokenize", {"model": MODEL, "tokens": [1, 151669]}, 400, "invalid_request_error", "tokens"),
        ("detokenize", {"model": MODEL, "tokens": [-1]}, 400, "invalid_request_error", "tokens"),
        ("detokenize", {"model": MODEL, "tokens": [[1], 2]}, 400, "invalid_request_error", "tokens"),
        ("detokenize", {"model": MODEL, "tokens": [True]}, 400, "invalid_request_error", "tokens"),
        ("detokenize", {"model": MODEL}, 400, "invalid_request_error", "tokens"),
    ],
)
async def test_errors_are_openai_json(
    http: aiohttp.ClientSession,
    shared: Deployment,
    path: str,
    body: dict[str, Any],
    status: int,
    code: str,
    param: str | None,
) -> None:
    got, reply = await post(http, f"{shared.url}/v1/{path}", body)
    assert got == status, reply
    assert reply["error"]["code"] == code and reply["error"]["message"]
    if param is not None:
        assert reply["error"]["param"] == param


async def test_not_json_and_wrong_method_are_json_errors(
    http: aiohttp.ClientSession, shared: Deployment
) -> None:
    async with http.post(f"{shared.url}/v1/tokenize", data=b"{nope") as reply:
        assert reply.status == 400 and (await reply.json())["error"]["type"] == "invalid_request_error"
    async with http.get(f"{shared.url}/v1/tokenize") as reply:
        assert reply.status == 405 and "error" in await reply.json()


async def test_tokenizers_list_and_cache_counters(http: aiohttp.ClientSession, shared: Deployment) -> None:
    text = "<|im_start|>user\ncache me<|im_end|>" + new_rid()
    for _ in range(2):
        await post(http, f"{shared.url}/v1/tokenize", {"model": MODEL, "prompt": text})
    async with http.get(f"{shared.url}/v1/tokenizers") as reply:
        listed = (await reply.json())["tokenizers"]
    assert [t["id"] for t in listed] == [MODEL]
    async with http.get(f"{shared.url}/v1/tokenizers/{MODEL}") as reply:
        info = await reply.json()
    assert info["vocab_size"] == 151669 and info["source"] == str(shared.gateway.config.model_path)
    l0, l1 = info["cache"]["l0"], info["cache"]["l1"]
    assert l0["hits"] >= 1 and l0["entries"] >= 1 and l1["misses"] >= 1
    assert 0 < l1["memory_bytes"] <= l1["max_memory_bytes"] == 50 * 1024 * 1024
    async with http.get(f"{shared.url}/v1/tokenizers/nope") as reply:
        assert reply.status == 404 and (await reply.json())["error"]["code"] == "tokenizer_not_found"


async def small_requests_during(
    shared: Deployment, big: Coroutine[Any, Any, tuple[int, Any]]
) -> tuple[int, Any, list[float]]:
    """``big``'s status and body, and the latency of each small tokenize request sent while it ran."""
    small = {"model": MODEL, "prompt": "hello"}
    url = f"{shared.url}/v1/tokenize"
    async with aiohttp.ClientSession() as other:  # its own connection, not queued behind the big one
        await post(other, url, small)
        task = asyncio.create_task(big)
        latencies: list[float] = []
        while not task.done():
            started = time.perf_counter()
            assert (await post(other, url, small))[0] == 200
            latencies.append(time.perf_counter() - started)
        status, body = await task
    return status, body, latencies


async def test_a_100k_token_prompt_does_not_stall_other_requests(
    http: aiohttp.ClientSession, shared: Deployment
) -> None:
    """Small requests keep being answered while a 100k-token prompt is tokenized (off the event loop)."""
    big = "The quick brown fox jumps over the lazy dog; " * 10_000 + new_rid()  # ~100k tokens, uncached
    url = f"{shared.url}/v1/tokenize"
    status, body, latencies = await small_requests_during(
        shared, post(http, url, {"model": MODEL, "prompt": big})
    )
    assert status == 200 and body["count"] >= 100_000
    slowest = max(latencies) * 1000
    print(f"{len(latencies)} small requests during a 100k-token tokenize; slowest {slowest:.1f} ms")
    assert len(latencies) >= 5 and max(latencies) < 0.1


async def test_a_100k_token_chat_prompt_does_not_stall_other_requests(
    http: aiohttp.ClientSession, shared: Deployment
) -> None:
    """The chat path renders and tokenizes a long conversation off the event loop too."""
    big = "The quick brown fox jumps over the lazy dog; " * 10_000 + new_rid()  # ~100k tokens, uncached
    chat = {"model": MODEL, "messages": [{"role": "user", "content": big}], "max_tokens": 1}
    status, body, latencies = await small_requests_during(
        shared, post(http, f"{shared.url}/v1/chat/completions", chat)
    )
    assert status == 200 and body["usage"]["prompt_tokens"] >= 100_000
    slowest = max(latencies) * 1000
    print(f"{len(latencies)} small requests during a 100k-token chat request; slowest {slowest:.1f} ms")
    assert len(latencies) >= 5 and max(latencies) < 0.1
