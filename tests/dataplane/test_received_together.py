"""Worker messages that have arrived together reach the pipeline as one chunk per choice; one that
arrives alone leaves at once. Over real gRPC on loopback, for each engine's protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dataplane.client import SglangClient, joined
from dataplane.engine_clients import engine_client
from dataplane.errors import WorkerError
from dataplane.tokenizer import ModelTokenizer
from dataplane.types import Chunk, Complete, LogprobBlock, SamplingParams, WireRequest, WorkerMessage
from refworker.config import WorkerConfig
from refworker.server import RefWorker

TOKENS = 48


@pytest.fixture(params=["sglang", "vllm", "trtllm"])
async def worker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, int]]:
    ref = RefWorker(WorkerConfig(host="127.0.0.1", port=0, engine=request.param))
    port = await ref.start()
    yield request.param, port
    await ref.stop(grace=0)


def wire(qwen: ModelTokenizer, directives: str, **sampling: object) -> WireRequest:
    text = f"[ref script=filler tokens={TOKENS} chunk=1 {directives}] go"
    return WireRequest(
        request_id="r1",
        input_ids=qwen.encode(text),
        original_text=text,
        sampling=SamplingParams(max_tokens=TOKENS, **sampling),  # type: ignore[arg-type]
        stop_token_ids=(),
        stream=True,
    )


def chunks_of(messages: list[WorkerMessage]) -> list[Chunk]:
    return [m for m in messages if isinstance(m, Chunk)]


async def read_slowly(stream: AsyncIterator[WorkerMessage], pause: float) -> list[WorkerMessage]:
    """Take the first message, then let the rest pile up in the gateway before reading on."""
    messages = [await anext(stream)]
    await asyncio.sleep(pause)
    messages += [m async for m in stream]
    return messages


async def test_what_piled_up_comes_as_one_chunk(worker: tuple[str, int], qwen: ModelTokenizer) -> None:
    engine, port = worker
    client = engine_client("127.0.0.1", port, None, engine)  # type: ignore[arg-type]
    try:
        messages = await read_slowly(client.generate(wire(qwen, "", logprobs=True)), pause=0.3)
    finally:
        client.close()
    first, *rest = chunks_of(messages)
    assert len(first.token_ids) == 1
    [together] = rest  # 47 one-token messages, sent while nobody read
    assert len(together.token_ids) == TOKENS - 1
    assert together.completion_tokens == TOKENS  # a running total: the last message's
    assert together.logprobs is not None and len(together.logprobs.token_ids) == TOKENS - 1
    assert together.logprobs.token_ids == together.token_ids
    [complete] = [m for m in messages if isinstance(m, Complete)]
    assert complete.completion_tokens == TOKENS and messages[-1] is complete


async def test_a_message_that_arrives_alone_is_not_held(
    worker: tuple[str, int], qwen: ModelTokenizer
) -> None:
    engine, port = worker
    client = engine_client("127.0.0.1", port, None, engine)  # type: ignore[arg-type]
    try:
        messages = [m async for m in client.generate(wire(qwen, "itl_ms=3"))]
    finally:
        client.close()
    sizes = [len(c.token_ids) for c in chunks_of(messages)]
    assert sum(sizes) == TOKENS
    assert len(sizes) > TOKENS // 2  # paced tokens stream as they come (a rare scheduling hiccup joins two)


async def test_what_came_before_a_failure_still_arrives(qwen: ModelTokenizer) -> None:
    ref = RefWorker(WorkerConfig(host="127.0.0.1", port=0))
    port = await ref.start()
    client = SglangClient("127.0.0.1", port)
    received: list[WorkerMessage] = []
    try:
        stream = client.generate(wire(qwen, "fail_after=20"))
        received.append(await anext(stream))
        await asyncio.sleep(0.3)  # the other 19 and the failure are in before we read on
        with pytest.raises(WorkerError):
            async for message in stream:
                received.append(message)
    finally:
        client.close()
        await ref.stop(grace=0)
    assert sum(len(c.token_ids) for c in chunks_of(received)) == 20


def test_joined_keeps_choices_apart_and_in_order_of_arrival() -> None:
    def chunk(index: int, ids: list[int], total: int, lp: bool = True) -> Chunk:
        block = LogprobBlock(ids, [-0.5] * len(ids), [([i], [-0.5]) for i in ids]) if lp else None
        return Chunk(index, ids, 7, total, 2, block)

    held = [chunk(1, [10], 1), chunk(0, [20, 21], 2), chunk(1, [11, 12], 3), chunk(0, [22], 3)]
    one, zero = joined(held)
    assert (one.index, one.token_ids, one.completion_tokens) == (1, [10, 11, 12], 3)
    assert (zero.index, zero.token_ids, zero.completion_tokens) == (0, [20, 21, 22], 3)
    assert one.logprobs is not None and one.logprobs.token_ids == [10, 11, 12]
    assert one.logprobs.top == [([10], [-0.5]), ([11], [-0.5]), ([12], [-0.5])]
    assert (one.prompt_tokens, one.cached_tokens) == (7, 2)
    alone = [chunk(0, [1], 1, lp=False)]
    assert joined(alone) == alone
    assert joined([chunk(0, [1], 1, lp=False), chunk(0, [2], 2, lp=False)])[0].logprobs is None
