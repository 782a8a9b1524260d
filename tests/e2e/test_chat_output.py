"""Chat completions through the official client: scripted outputs (multi-byte text, any chunking),
streaming equal to non-streaming, finish reasons, usage, n > 1, logprobs."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from dataplane.tokenizer import ModelTokenizer
from refworker.grpc_messages import fake_logprob
from refworker.scripts import FILLER_TEXT, FIXED_TEXT, THINK_TEXT, tool_text
from tests.e2e.conftest import (
    MODEL,
    Deployment,
    api_client,
    assert_clean_deltas,
    chat,
    chat_stream,
    extra,
    find_request,
    finish,
    new_rid,
    streamed_text,
)

FIXED_COMPLETION_TOKENS = 26  # the fixed script's 25 tokens, then EOS
CHUNKINGS = ["", "chunk=1", "chunk=random seed=7", "chunk=3"]


# ---- scripts: text, streaming == non-streaming, multi-byte characters ----------------------------------


def expected_script_text(script: str, content: str) -> str | None:
    if script == "fixed":
        return FIXED_TEXT
    if script == "filler":
        return FILLER_TEXT * 3  # tokens=30: ten tokens per sentence
    if script == "echo":
        # The echo script repeats the templated prompt up to its first <|im_end|> (an EOS): the gateway
        # drops the special <|im_start|> and stops at EOS.
        return f"user\n{content}"
    if script == "tool":
        return tool_text("get_weather")  # no tools in the request: nothing parses it
    return None


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("script", ["fixed", "echo", "filler", "tool", "think"])
async def test_script_stream_equals_non_stream(
    client: openai.AsyncOpenAI, script: str, chunking: str
) -> None:
    content = f"[ref script={script} tokens=30 {chunking}] Say something, 请。"
    whole = await chat(client, content)
    chunks = await chat_stream(client, content)

    message = whole.choices[0].message
    assert message.role == "assistant"
    assert whole.choices[0].finish_reason == "stop"
    assert streamed_text(chunks) == message.content
    assert finish(chunks).finish_reason == "stop"
    assert_clean_deltas(chunks)
    assert "".join(extra(c.delta, "reasoning_content") or "" for ch in chunks for c in ch.choices) == (
        extra(message, "reasoning_content") or ""
    )
    expected = expected_script_text(script, content)
    if expected is not None:
        assert message.content == expected
    elif reasoning := extra(message, "reasoning_content"):  # think, split by a reasoning parser
        assert "先想一想" in reasoning and "<think>" not in reasoning
        assert message.content.strip() == "Hello! 你好 👋"
    else:  # think, no reasoning parser: the raw text
        assert message.content == THINK_TEXT


@pytest.mark.parametrize("seed", range(6))
async def test_random_chunking_configured_on_worker(
    chunky: Deployment, qwen: ModelTokenizer, seed: int
) -> None:
    async with api_client(chunky) as client:
        content = f"[ref seed={seed}] hi"
        chunks = await chat_stream(client, content)
        whole = await chat(client, content)
    assert streamed_text(chunks) == whole.choices[0].message.content == FIXED_TEXT
    assert_clean_deltas(chunks)
    # Several tokens per chunk: fewer content deltas than tokens.
    deltas = [c for ch in chunks for c in ch.choices if c.delta.content]
    assert len(deltas) < len(qwen.encode(FIXED_TEXT))


# ---- finish reasons and usage -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("limit_key", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("limit", [1, 5, 13, 24])
async def test_finish_length(
    client: openai.AsyncOpenAI, qwen: ModelTokenizer, limit_key: str, limit: int, stream: bool
) -> None:
    ids = qwen.encode(FIXED_TEXT)
    kwargs: dict[str, Any] = {limit_key: limit}
    if stream:
        chunks = await chat_stream(
            client, "[ref chunk=random] hi", stream_options={"include_usage": True}, **kwargs
        )
        text, reason, usage = streamed_text(chunks), finish(chunks).finish_reason, chunks[-1].usage
    else:
        whole = await chat(client, "[ref chunk=random] hi", **kwargs)
        text, reason, usage = whole.choices[0].message.content, whole.choices[0].finish_reason, whole.usage
    assert reason == "length"
    assert usage.completion_tokens == limit
    # Cut inside the robot emoji (13) the text ends like a one-shot decode of the same ids.
    assert text == qwen.decode(ids[:limit])


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_counts_the_templated_prompt(
    client: openai.AsyncOpenAI, shared: Deployment, qwen: ModelTokenizer, stream: bool
) -> None:
    rid = new_rid()
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Count the tokens of this templated prompt, 请 🙂"},
    ]
    kwargs: dict[str, Any] = {"extra_headers": {"x-request-id": rid}}
    if stream:
        kwargs |= {"stream": True, "stream_options": {"include_usage": True}}
    reply = await client.chat.completions.create(model=MODEL, messages=messages, **kwargs)  # type: ignore[arg-type]
    usage = [c async for c in reply][-1].usage if stream else reply.usage

    prompt_ids = qwen.encode(qwen.render_chat(messages))
    assert usage.prompt_tokens == len(prompt_ids)
    # The worker generates the script and then EOS; EOS counts as a generated token.
    assert usage.completion_tokens == len(qwen.encode(FIXED_TEXT)) + 1 == FIXED_COMPLETION_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    _, recorded = find_request(shared, rid)
    assert [int(i) for i in recorded["tokenized"]["input_ids"]] == prompt_ids


async def test_cached_tokens_on_a_repeated_long_prompt(client: openai.AsyncOpenAI) -> None:
    long_prompt = new_rid("cache") + " " + " ".join(f"word{i}" for i in range(300))
    usages = [(await chat(client, long_prompt, max_tokens=2)).usage for _ in range(3)]
    assert usages[0].prompt_tokens_details.cached_tokens == 0
    # Three requests over two workers: at least one repeat lands where the prompt was already prefilled.
    cached = max(u.prompt_tokens_details.cached_tokens for u in usages[1:])
    assert 0 < cached <= usages[0].prompt_tokens


async def test_include_usage_sends_a_final_usage_chunk(client: openai.AsyncOpenAI) -> None:
    chunks = await chat_stream(client, "hi", stream_options={"include_usage": True})
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == FIXED_COMPLETION_TOKENS
    assert all(ch.usage is None for ch in body)
    assert streamed_text(body) == FIXED_TEXT


async def test_no_usage_chunk_without_include_usage(client: openai.AsyncOpenAI) -> None:
    chunks = await chat_stream(client, "hi")
    assert all(ch.choices for ch in chunks)
    assert all(ch.usage is None for ch in chunks)


# ---- n > 1 -------------------------------------------------------------------------------------------


async def test_n_choices_non_stream(client: openai.AsyncOpenAI) -> None:
    whole = await chat(client, "hi", n=3)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    for choice in whole.choices:
        assert choice.message.content == FIXED_TEXT
        assert choice.finish_reason == "stop"
    assert whole.usage.completion_tokens == 3 * FIXED_COMPLETION_TOKENS


async def test_n_choices_stream_interleaved(client: openai.AsyncOpenAI) -> None:
    chunks = await chat_stream(client, "[ref chunk=1] hi", n=3, stream_options={"include_usage": True})
    indices = [c.index for ch in chunks for c in ch.choices if c.delta.content]
    assert set(indices) == {0, 1, 2}
    assert indices != sorted(indices)  # interleaved as the worker sent them, not choice by choice
    for i in range(3):
        assert streamed_text(chunks, i) == FIXED_TEXT
        assert finish(chunks, i).finish_reason == "stop"
        first = next(c for ch in chunks for c in ch.choices if c.index == i)
        assert first.delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 3 * FIXED_COMPLETION_TOKENS
    assert_clean_deltas(chunks)


# ---- logprobs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_logprobs_and_top_logprobs(
    client: openai.AsyncOpenAI, qwen: ModelTokenizer, stream: bool
) -> None:
    kwargs: dict[str, Any] = {"logprobs": True, "top_logprobs": 3}
    if stream:
        chunks = await chat_stream(client, "[ref chunk=random seed=5] hi", **kwargs)
        entries = [e for ch in chunks for c in ch.choices if c.logprobs for e in c.logprobs.content]
        text = streamed_text(chunks)
    else:
        whole = await chat(client, "[ref chunk=random seed=5] hi", **kwargs)
        entries, text = whole.choices[0].logprobs.content, whole.choices[0].message.content
    ids = qwen.encode(FIXED_TEXT)
    assert text == FIXED_TEXT
    assert len(entries) == len(ids)  # one per generated token (EOS is not shown)
    for position, entry in enumerate(entries):
        assert entry.logprob == pytest.approx(fake_logprob(position), abs=1e-6)
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-6)
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
    assert [e.token for e in entries if "\ufffd" not in e.token] == [
        qwen.decode([i]) for i in ids if "\ufffd" not in qwen.decode([i])
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_logprob_bytes_rebuild_the_text(client: openai.AsyncOpenAI, stream: bool) -> None:
    """OpenAI: ``bytes`` are the token's UTF-8 bytes, to be joined where a character spans tokens."""
    if stream:
        chunks = await chat_stream(client, "hi", logprobs=True)
        entries = [e for ch in chunks for c in ch.choices if c.logprobs for e in c.logprobs.content]
    else:
        entries = (await chat(client, "hi", logprobs=True)).choices[0].logprobs.content
    assert bytes(b for e in entries for b in e.bytes) == FIXED_TEXT.encode()


async def test_continuous_usage_stats_is_honoured_or_refused(client: openai.AsyncOpenAI) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    try:
        chunks = await chat_stream(client, "hi", stream_options=options)
    except openai.BadRequestError as exc:
        assert "continuous_usage_stats" in exc.message
        return
    assert all(ch.usage is not None for ch in chunks)
