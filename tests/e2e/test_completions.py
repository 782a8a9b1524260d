"""``/v1/completions`` through the official client: text and token-id prompts, batches, echo, streaming."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from dataplane.tokenizer import ModelTokenizer
from refworker.grpc_messages import fake_logprob
from refworker.scripts import FILLER_TEXT, FIXED_TEXT
from tests.e2e.conftest import MODEL, Deployment, find_request, new_rid


async def complete(client: openai.AsyncOpenAI, prompt: Any, **kwargs: Any) -> Any:
    return await client.completions.create(model=MODEL, prompt=prompt, **kwargs)


async def complete_stream(client: openai.AsyncOpenAI, prompt: Any, **kwargs: Any) -> list[Any]:
    stream = await complete(client, prompt, stream=True, **kwargs)
    return [chunk async for chunk in stream]


def streamed(chunks: list[Any], index: int = 0) -> str:
    return "".join(c.text for ch in chunks for c in ch.choices if c.index == index)


def finishes(chunks: list[Any]) -> dict[int, str]:
    out: dict[int, str] = {}
    for ch in chunks:
        for c in ch.choices:
            if c.finish_reason is not None:
                assert c.index not in out, f"choice {c.index} finished twice"
                out[c.index] = c.finish_reason
    return out


async def test_string_prompt(client: openai.AsyncOpenAI, shared: Deployment, qwen: ModelTokenizer) -> None:
    rid = new_rid()
    prompt = "Once upon a time, 从前"
    reply = await complete(client, prompt, max_tokens=100, extra_headers={"x-request-id": rid})
    assert reply.object == "text_completion"
    assert reply.id.startswith(f"{rid}-")
    assert reply.choices[0].text == FIXED_TEXT
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == len(qwen.encode(prompt))
    assert reply.usage.completion_tokens == len(qwen.encode(FIXED_TEXT)) + 1
    _, recorded = find_request(shared, rid)
    # No chat template: the prompt is sent as it is.
    assert recorded["tokenized"]["original_text"] == prompt
    assert [int(i) for i in recorded["tokenized"]["input_ids"]] == qwen.encode(prompt)


async def test_token_id_prompt(client: openai.AsyncOpenAI, shared: Deployment, qwen: ModelTokenizer) -> None:
    rid = new_rid()
    ids = qwen.encode("[ref script=filler tokens=20] go")
    reply = await complete(client, ids, max_tokens=100, extra_headers={"x-request-id": rid})
    assert reply.choices[0].text == FILLER_TEXT * 2
    assert reply.usage.prompt_tokens == len(ids)
    _, recorded = find_request(shared, rid)
    assert [int(i) for i in recorded["tokenized"]["input_ids"]] == ids


def test_default_max_tokens_is_16_expected(qwen: ModelTokenizer) -> None:
    # The 16th token of the fixed script completes the rocket: the cut text is clean.
    assert qwen.decode(qwen.encode(FIXED_TEXT)[:16]) == "Hello! 你好，世界。I am a reference worker 🤖🚀"


@pytest.mark.parametrize("stream", [False, True])
async def test_default_max_tokens_is_16(client: openai.AsyncOpenAI, stream: bool) -> None:
    if stream:
        chunks = await complete_stream(client, "hi", stream_options={"include_usage": True})
        text, reasons, usage = streamed(chunks), finishes(chunks), chunks[-1].usage
    else:
        reply = await complete(client, "hi")
        text, reasons, usage = reply.choices[0].text, {0: reply.choices[0].finish_reason}, reply.usage
    assert usage.completion_tokens == 16
    assert reasons == {0: "length"}
    assert text == "Hello! 你好，世界。I am a reference worker 🤖🚀"


@pytest.mark.parametrize("stream", [False, True])
async def test_batch_of_prompts(client: openai.AsyncOpenAI, qwen: ModelTokenizer, stream: bool) -> None:
    prompts = ["[ref script=filler tokens=10] a", "[ref chunk=random] b", "[ref script=filler tokens=30] c"]
    expected = [FILLER_TEXT, FIXED_TEXT, FILLER_TEXT * 3]
    if stream:
        chunks = await complete_stream(client, prompts, max_tokens=64, stream_options={"include_usage": True})
        texts = [streamed(chunks, i) for i in range(3)]
        assert finishes(chunks) == {0: "stop", 1: "stop", 2: "stop"}
        usage = chunks[-1].usage
        assert len({ch.id for ch in chunks}) == 1
    else:
        reply = await complete(client, prompts, max_tokens=64)
        assert [c.index for c in reply.choices] == [0, 1, 2]
        assert [c.finish_reason for c in reply.choices] == ["stop"] * 3
        texts, usage = [c.text for c in reply.choices], reply.usage
    assert texts == expected
    assert usage.prompt_tokens == sum(len(qwen.encode(p)) for p in prompts)
    assert usage.completion_tokens == sum(len(qwen.encode(t)) + 1 for t in expected)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_batch_with_n(client: openai.AsyncOpenAI) -> None:
    prompts = ["[ref script=filler tokens=10] a", "b"]
    reply = await complete(client, prompts, n=2, max_tokens=64)
    # Prompt p's choice i is index p * n + i.
    assert [(c.index, c.text) for c in reply.choices] == [
        (0, FILLER_TEXT),
        (1, FILLER_TEXT),
        (2, FIXED_TEXT),
        (3, FIXED_TEXT),
    ]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("as_ids", [False, True])
async def test_echo(client: openai.AsyncOpenAI, qwen: ModelTokenizer, stream: bool, as_ids: bool) -> None:
    prompt = "Echo me, 回声 🔁:"
    sent: Any = qwen.encode(prompt) if as_ids else prompt
    if stream:
        text = streamed(await complete_stream(client, sent, echo=True, max_tokens=64))
    else:
        text = (await complete(client, sent, echo=True, max_tokens=64)).choices[0].text
    assert text == prompt + FIXED_TEXT


@pytest.mark.parametrize("chunking", ["chunk=1", "chunk=random seed=11", "chunk=6"])
async def test_stream_equals_non_stream(client: openai.AsyncOpenAI, chunking: str) -> None:
    prompt = f"[ref {chunking}] hi"
    chunks = await complete_stream(client, prompt, max_tokens=64)
    reply = await complete(client, prompt, max_tokens=64)
    assert streamed(chunks) == reply.choices[0].text == FIXED_TEXT
    assert all("\ufffd" not in c.text for ch in chunks for c in ch.choices)
    assert finishes(chunks) == {0: "stop"}
    assert all(ch.object == "text_completion" for ch in chunks)


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_string(client: openai.AsyncOpenAI, stream: bool) -> None:
    if stream:
        chunks = await complete_stream(client, "[ref chunk=1] hi", stop=["世界。I"], max_tokens=64)
        text, reasons = streamed(chunks), finishes(chunks)
    else:
        reply = await complete(client, "hi", stop=["世界。I"], max_tokens=64)
        text, reasons = reply.choices[0].text, {0: reply.choices[0].finish_reason}
    assert text == "Hello! 你好，"
    assert reasons == {0: "stop"}


@pytest.mark.parametrize(
    ("stream", "echo"),
    [
        (False, False),
        (False, True),
        (True, False),
        pytest.param(True, True),
    ],
)
async def test_logprobs(client: openai.AsyncOpenAI, qwen: ModelTokenizer, stream: bool, echo: bool) -> None:
    prompt = "[ref script=filler tokens=20 chunk=3] go"
    kwargs: dict[str, Any] = {"logprobs": 2, "max_tokens": 64, "echo": echo}
    if stream:
        chunks = await complete_stream(client, prompt, **kwargs)
        text = streamed(chunks)
        blocks = [c.logprobs for ch in chunks for c in ch.choices if c.logprobs]
        tokens = [t for b in blocks for t in b.tokens]
        values = [v for b in blocks for v in b.token_logprobs]
        tops = [t for b in blocks for t in b.top_logprobs]
        offsets = [o for b in blocks for o in b.text_offset]
    else:
        choice = (await complete(client, prompt, **kwargs)).choices[0]
        text, lp = choice.text, choice.logprobs
        tokens, values, tops, offsets = lp.tokens, lp.token_logprobs, lp.top_logprobs, lp.text_offset
    prefix = prompt if echo else ""
    assert text == prefix + FILLER_TEXT * 2
    # One entry per generated token (EOS not shown), offsets into the returned text.
    assert "".join(tokens) == FILLER_TEXT * 2
    assert len(tokens) == 20
    assert values == pytest.approx([fake_logprob(i) for i in range(20)], abs=1e-6)
    assert all(len(t) == 2 for t in tops)
    assert offsets == [len(prefix) + len("".join(tokens[:i])) for i in range(20)]
