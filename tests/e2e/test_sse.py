"""The exact bytes of a stream, read with raw aiohttp: what every SSE client relies on."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from refworker.scripts import FIXED_TEXT
from tests.e2e.conftest import MODEL, Deployment, sse_events

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "[ref chunk=random] hi"}], "stream": True}
COMPLETION = {"model": MODEL, "prompt": "[ref chunk=random] hi", "max_tokens": 64, "stream": True}


def payloads(events: list[bytes]) -> list[dict[str, Any]]:
    """The JSON of every event but the final ``[DONE]``; each event is exactly one ``data:`` line."""
    assert events[-1] == b"data: [DONE]"
    out = []
    for event in events[:-1]:
        assert event.startswith(b"data: "), event
        assert b"\n" not in event and b"\r" not in event, event
        out.append(json.loads(event[len(b"data: ") :]))
    return out


@pytest.mark.parametrize(
    ("path", "body", "obj"),
    [
        ("/v1/chat/completions", CHAT, "chat.completion.chunk"),
        (
            "/v1/chat/completions",
            CHAT | {"n": 2, "stream_options": {"include_usage": True}},
            "chat.completion.chunk",
        ),
        ("/v1/completions", COMPLETION, "text_completion"),
        ("/v1/completions", COMPLETION | {"stream_options": {"include_usage": True}}, "text_completion"),
    ],
)
async def test_sse_framing(
    http: aiohttp.ClientSession, shared: Deployment, path: str, body: dict[str, Any], obj: str
) -> None:
    async with http.post(shared.url + path, json=body) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].split(";")[0].strip() == "text/event-stream"
        assert reply.headers.get("Cache-Control") == "no-cache"
        raw = await reply.read()
    # Nothing after [DONE]; every event ends with a blank line.
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    assert raw.count(b"data: [DONE]") == 1
    events = raw[:-2].split(b"\n\n")
    chunks = payloads(events)
    assert {c["object"] for c in chunks} == {obj}
    assert len({c["id"] for c in chunks}) == 1
    include_usage = "stream_options" in body
    for chunk in chunks:
        # With include_usage every chunk carries "usage": null but the last, which has the usage.
        assert ("usage" in chunk) is include_usage
    if include_usage:
        *chunks, last = chunks
        assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
        assert all(c["usage"] is None for c in chunks)


async def test_first_chat_chunk_opens_with_the_role(http: aiohttp.ClientSession, shared: Deployment) -> None:
    async with http.post(f"{shared.url}/v1/chat/completions", json=CHAT | {"n": 2}) as reply:
        chunks = payloads(await sse_events(reply))
    for index in (0, 1):
        deltas = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert deltas[0]["delta"]["role"] == "assistant"
        assert all("role" not in d["delta"] for d in deltas[1:])
        assert "".join(d["delta"].get("content") or "" for d in deltas) == FIXED_TEXT
        assert [d["finish_reason"] for d in deltas][-1] == "stop"
        assert all(d["finish_reason"] is None for d in deltas[:-1])
    # One choice per chunk, as OpenAI streams them.
    assert all(len(c["choices"]) == 1 for c in chunks)


async def test_non_stream_is_plain_json(http: aiohttp.ClientSession, shared: Deployment) -> None:
    async with http.post(f"{shared.url}/v1/chat/completions", json=CHAT | {"stream": False}) as reply:
        assert reply.status == 200
        assert reply.content_type == "application/json"
        body = await reply.json()
    assert body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert (message["role"], message["content"]) == ("assistant", FIXED_TEXT)
