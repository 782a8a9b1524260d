"""Worker failures injected with ``[ref fail=…]`` / ``[ref fail_after=…]``: the mapped HTTP status before
the first token (streaming or not), an in-band error event after it, and a gateway that keeps serving."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest

from refworker.scripts import FIXED_TEXT
from tests.e2e.conftest import MODEL, Deployment, new_rid, sse_events, wait_idle

# gRPC status of the worker → HTTP status (SMG's table) → what the official client raises.
FAILURES = [
    ("INVALID_ARGUMENT", 400, openai.BadRequestError),
    ("FAILED_PRECONDITION", 400, openai.BadRequestError),
    ("OUT_OF_RANGE", 400, openai.BadRequestError),
    ("UNAUTHENTICATED", 401, openai.AuthenticationError),
    ("PERMISSION_DENIED", 403, openai.PermissionDeniedError),
    ("NOT_FOUND", 404, openai.NotFoundError),
    ("ALREADY_EXISTS", 409, openai.ConflictError),
    ("ABORTED", 409, openai.ConflictError),
    ("RESOURCE_EXHAUSTED", 429, openai.RateLimitError),
    ("INTERNAL", 500, openai.InternalServerError),
    ("UNKNOWN", 500, openai.InternalServerError),
    ("DATA_LOSS", 500, openai.InternalServerError),
    ("UNIMPLEMENTED", 501, openai.InternalServerError),
    ("UNAVAILABLE", 503, openai.InternalServerError),
    ("DEADLINE_EXCEEDED", 504, openai.InternalServerError),
]


def received(d: Deployment, rid: str) -> list[list[str]]:
    """Per worker, the request ids it received that belong to ``rid`` (retries get suffixes)."""
    return [[r for r in record["received"] if r.startswith(rid)] for record in d.records()]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("grpc_status", "status", "error_type"), FAILURES)
async def test_failure_before_first_token(
    client: openai.AsyncOpenAI,
    http: aiohttp.ClientSession,
    shared: Deployment,
    grpc_status: str,
    status: int,
    error_type: type[openai.APIStatusError],
    stream: bool,
) -> None:
    rid = new_rid()
    with pytest.raises(error_type) as caught:
        await client.chat.completions.create(  # type: ignore[call-overload]
            model=MODEL,
            messages=[{"role": "user", "content": f"[ref fail={grpc_status}] hi"}],
            stream=stream,
            extra_headers={"x-request-id": rid},
        )
    exc = caught.value
    assert exc.status_code == status
    # A JSON error, not an SSE stream that begins and then fails.
    assert exc.response.headers["content-type"].startswith("application/json")
    error = exc.response.json()["error"]
    assert error["message"] and error["type"]
    await wait_idle(http, shared)


async def test_unavailable_everywhere_tries_every_worker(
    client: openai.AsyncOpenAI, shared: Deployment
) -> None:
    rid = new_rid()
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "[ref fail=UNAVAILABLE] hi"}],
            extra_headers={"x-request-id": rid},
        )
    assert caught.value.status_code == 503
    # Five attempts in all (--retry-max-retries), each on the other worker than the one before.
    assert sorted(len(ids) for ids in received(shared, rid)) == [2, 3]


async def test_mid_stream_failure_raw(http: aiohttp.ClientSession, shared: Deployment) -> None:
    rid = new_rid()
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "[ref fail_after=2] hi"}],
        "stream": True,
    }
    async with http.post(
        f"{shared.url}/v1/chat/completions", json=body, headers={"x-request-id": rid}
    ) as reply:
        assert reply.status == 200  # the stream had begun
        events = await sse_events(reply)
    assert events[-1] == b"data: [DONE]"
    payloads = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    *chunks, error_event = payloads
    assert set(error_event) == {"error"}
    assert error_event["error"]["message"]
    assert error_event["error"]["type"]
    # Two worker messages went out as text before the failure.
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text and FIXED_TEXT.startswith(text)
    assert all("error" not in c for c in chunks)
    # Nothing is retried once the first token has gone out.
    assert sorted(len(ids) for ids in received(shared, rid)) == [0, 1]
    await wait_idle(http, shared)


async def test_mid_stream_failure_openai_client(
    client: openai.AsyncOpenAI, http: aiohttp.ClientSession, shared: Deployment
) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "[ref fail_after=3] hi"}], stream=True
    )
    seen: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            seen.append(chunk)
    # The client raises on the in-band error event, after yielding the chunks before it.
    assert "".join(c.choices[0].delta.content or "" for c in seen if c.choices)
    assert isinstance(caught.value.body, dict) and caught.value.body.get("message")
    await wait_idle(http, shared)


async def test_mid_response_failure_non_stream(
    client: openai.AsyncOpenAI, http: aiohttp.ClientSession, shared: Deployment
) -> None:
    # Not streaming, the worker sends one message per choice: with n=3 it fails after two choices.
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "[ref fail_after=2] hi"}], n=3
        )
    assert 500 <= caught.value.status_code < 600
    assert caught.value.response.headers["content-type"].startswith("application/json")
    assert caught.value.response.json()["error"]["message"]
    await wait_idle(http, shared)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_batch_and_completions_failures(
    http: aiohttp.ClientSession, shared: Deployment, path: str
) -> None:
    if path == "/v1/completions":
        body: dict[str, Any] = {"model": MODEL, "prompt": ["ok", "[ref fail=RESOURCE_EXHAUSTED] no"]}
    else:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "[ref fail=RESOURCE_EXHAUSTED] no"}]}
    for stream in (False, True):
        async with http.post(shared.url + path, json=body | {"stream": stream}) as reply:
            assert reply.status == 429
            assert reply.content_type == "application/json"
            assert (await reply.json())["error"]["message"]
    await wait_idle(http, shared)


async def test_gateway_serves_after_worker_failures(
    client: openai.AsyncOpenAI, http: aiohttp.ClientSession, shared: Deployment
) -> None:
    for directive in ("fail=INTERNAL", "fail_after=1", "fail=UNAVAILABLE"):
        with pytest.raises(openai.APIError):
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"[ref {directive}] hi"}], stream=True
            )
            async for _ in stream:
                pass
    reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == FIXED_TEXT
    workers = await wait_idle(http, shared)
    assert all(w["is_healthy"] for w in workers)
