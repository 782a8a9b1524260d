"""Where output ends: stop strings (hidden or shown, across chunk boundaries, one token or several),
stop token ids, EOS, ignore_eos / min_tokens, special tokens; and the usage such a cut reports."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from dataplane.tokenizer import ModelTokenizer
from refworker.scripts import FILLER_TEXT, FIXED_TEXT
from tests.e2e.conftest import (
    EOS,
    Deployment,
    assert_clean_deltas,
    chat,
    chat_stream,
    extra,
    find_request,
    finish,
    new_rid,
    streamed_text,
)

# ---- stop strings and stop tokens ----------------------------------------------------------------------

STOP_CASES = [
    # (stop, content before it, matched_stop)
    (["reference worker"], "Hello! 你好，世界。I am a ", "reference worker"),  # spans two tokens
    (["界。I"], "Hello! 你好，世", "界。I"),  # starts inside a token
    (["🤖"], "Hello! 你好，世界。I am a reference worker ", "🤖"),  # three byte-tokens
    (["🚀"], "Hello! 你好，世界。I am a reference worker 🤖", "🚀"),  # one token
    ([" worker"], "Hello! 你好，世界。I am a reference", " worker"),  # one token
    (["ö", "你好"], "Hello! ", "你好"),  # the earliest match wins, not the first listed
    (["zzz"], FIXED_TEXT, EOS),  # never matched: EOS stops
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("chunking", ["chunk=1", "chunk=random seed=3", "chunk=4"])
@pytest.mark.parametrize(("stop", "text", "matched"), STOP_CASES)
async def test_stop_strings(
    client: openai.AsyncOpenAI, stop: list[str], text: str, matched: str | int, chunking: str, stream: bool
) -> None:
    content = f"[ref {chunking}] hi"
    if stream:
        chunks = await chat_stream(client, content, stop=stop)
        got, choice = streamed_text(chunks), finish(chunks)
        assert_clean_deltas(chunks)
    else:
        whole = await chat(client, content, stop=stop)
        got, choice = whole.choices[0].message.content, whole.choices[0]
    assert got == text
    assert choice.finish_reason == "stop"
    assert extra(choice, "matched_stop") == matched


def tokens_until(qwen: ModelTokenizer, stop: list[str]) -> int:
    """How many tokens the fixed script generates (then EOS) until one of ``stop`` is complete."""
    ids = [*qwen.encode(FIXED_TEXT), EOS]
    for k in range(1, len(ids)):
        if any(s in qwen.decode(ids[:k]) for s in stop):
            return k
    return len(ids)


# Stops only the gateway can match (several tokens): (stop, tokens generated until it is complete).
_LOCAL_STOPS = {"reference worker": 12, "界。I": 8, "🤖": 15}


def _usage_cases() -> list[Any]:
    return [
        pytest.param(stop, chunking, stream, id=f"{matched}-{chunking}-{stream}")
        for stop, _, matched in STOP_CASES
        for chunking in ("chunk=1", "chunk=4")
        for stream in (False, True)
    ]


@pytest.mark.parametrize(("stop", "chunking", "stream"), _usage_cases())
async def test_stop_string_usage_counts_tokens_up_to_the_stop(
    client: openai.AsyncOpenAI, qwen: ModelTokenizer, stop: list[str], chunking: str, stream: bool
) -> None:
    """Usage must not depend on streaming or on how the worker grouped tokens into chunks."""
    content = f"[ref {chunking}] hi"
    if stream:
        chunks = await chat_stream(client, content, stop=stop, stream_options={"include_usage": True})
        usage = chunks[-1].usage
    else:
        usage = (await chat(client, content, stop=stop)).usage
    expected = tokens_until(qwen, stop)
    assert _LOCAL_STOPS.get(stop[0], expected) == expected
    assert usage.completion_tokens == expected


async def test_single_token_stop_goes_to_the_worker_as_a_stop_token(
    client: openai.AsyncOpenAI, shared: Deployment, qwen: ModelTokenizer
) -> None:
    rid = new_rid()
    await chat(client, "hi", stop=[" worker", "reference worker"], extra_headers={"x-request-id": rid})
    _, recorded = find_request(shared, rid)
    params = recorded["sampling_params"]
    assert params.get("stop", []) == []  # a tokenizer-less engine refuses stop strings
    assert [int(i) for i in params["stop_token_ids"]] == qwen.encode(" worker")


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_token_ids(
    client: openai.AsyncOpenAI, shared: Deployment, qwen: ModelTokenizer, stream: bool
) -> None:
    (comma,) = qwen.encode("，")
    rid = new_rid()
    kwargs: dict[str, Any] = {
        "extra_body": {"stop_token_ids": [comma]},
        "extra_headers": {"x-request-id": rid},
    }
    if stream:
        chunks = await chat_stream(client, "hi", **kwargs)
        text, choice = streamed_text(chunks), finish(chunks)
    else:
        whole = await chat(client, "hi", **kwargs)
        text, choice = whole.choices[0].message.content, whole.choices[0]
    assert text == "Hello! 你好"  # the stop token itself is not shown
    assert choice.finish_reason == "stop"
    assert extra(choice, "matched_stop") == comma
    _, recorded = find_request(shared, rid)
    assert comma in [int(i) for i in recorded["sampling_params"]["stop_token_ids"]]


# ---- options that change the output ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("content", "kwargs", "reason"),
    [
        # EOS ignored: the script, then filler up to max_tokens.
        ("hi", {"max_tokens": 40, "extra_body": {"ignore_eos": True}}, "length"),
        # At least 40 tokens: the script, filler, then EOS.
        ("hi", {"max_tokens": 100, "extra_body": {"min_tokens": 40}}, "stop"),
    ],
    ids=["ignore_eos", "min_tokens"],
)
async def test_ignore_eos_and_min_tokens(
    client: openai.AsyncOpenAI,
    qwen: ModelTokenizer,
    content: str,
    kwargs: dict[str, Any],
    reason: str,
    stream: bool,
) -> None:
    padded = qwen.decode([*qwen.encode(FIXED_TEXT), *qwen.encode(FILLER_TEXT * 2)[:15]])
    if stream:
        chunks = await chat_stream(client, content, stream_options={"include_usage": True}, **kwargs)
        text, choice, usage = streamed_text(chunks), finish(chunks), chunks[-1].usage
    else:
        whole = await chat(client, content, **kwargs)
        text, choice, usage = whole.choices[0].message.content, whole.choices[0], whole.usage
    assert text == padded
    assert choice.finish_reason == reason
    assert usage.completion_tokens == (40 if reason == "length" else 41)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("content", "kwargs", "expected", "matched"),
    [
        (
            "[ref chunk=1] hi",
            {"stop": ["世界"], "extra_body": {"no_stop_trim": True}},
            "Hello! 你好，世界",
            "世界",
        ),
        (
            "[ref chunk=3] hi",
            {"stop": ["reference worker"], "extra_body": {"no_stop_trim": True}},
            "Hello! 你好，世界。I am a reference worker",
            "reference worker",
        ),
        # The echo script repeats the templated prompt: <|im_start|> is special, shown only on request.
        (
            "[ref script=echo] hey",
            {"extra_body": {"skip_special_tokens": False}},
            "<|im_start|>user\n[ref script=echo] hey",
            EOS,
        ),
        ("[ref script=echo] hey", {}, "user\n[ref script=echo] hey", EOS),
    ],
    ids=[
        "no_stop_trim-one-token",
        "no_stop_trim-two-tokens",
        "skip_special_tokens=false",
        "skip_special_tokens",
    ],
)
async def test_visible_stops_and_special_tokens(
    client: openai.AsyncOpenAI,
    content: str,
    kwargs: dict[str, Any],
    expected: str,
    matched: Any,
    stream: bool,
) -> None:
    if stream:
        chunks = await chat_stream(client, content, **kwargs)
        text, choice = streamed_text(chunks), finish(chunks)
    else:
        whole = await chat(client, content, **kwargs)
        text, choice = whole.choices[0].message.content, whole.choices[0]
    assert text == expected
    assert choice.finish_reason == "stop"
    assert extra(choice, "matched_stop") == matched


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_string_with_n_choices(client: openai.AsyncOpenAI, stream: bool) -> None:
    kwargs: dict[str, Any] = {"n": 3, "stop": ["reference worker"]}
    if stream:
        chunks = await chat_stream(client, "[ref chunk=random seed=9] hi", **kwargs)
        texts = [streamed_text(chunks, i) for i in range(3)]
        choices = [finish(chunks, i) for i in range(3)]
    else:
        whole = await chat(client, "[ref chunk=random seed=9] hi", **kwargs)
        texts = [c.message.content for c in whole.choices]
        choices = whole.choices
    assert texts == ["Hello! 你好，世界。I am a "] * 3
    assert [c.finish_reason for c in choices] == ["stop"] * 3
    assert [extra(c, "matched_stop") for c in choices] == ["reference worker"] * 3
