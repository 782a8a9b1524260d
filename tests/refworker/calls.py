"""Client-side helpers: build SGLang requests and take responses apart, as a real client would."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from tokenizers import Tokenizer

EOS = 151645


def make_request(
    ids: list[int],
    *,
    rid: str = "req-1",
    stream: bool = True,
    **sampling: Any,
) -> Any:
    sampling.setdefault("n", 1)
    return pb.GenerateRequest(
        request_id=rid,
        tokenized=pb.TokenizedInput(input_ids=ids),
        sampling_params=pb.SamplingParams(temperature=1.0, top_p=1.0, top_k=-1, **sampling),
        stream=stream,
    )


def prompt(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


async def collect(stub: Any, request: Any) -> list[Any]:
    return [message async for message in stub.Generate(request)]


def streamed_ids(messages: list[Any], index: int = 0) -> list[int]:
    return [t for m in messages if m.HasField("chunk") and m.chunk.index == index for t in m.chunk.token_ids]


def completes(messages: list[Any]) -> dict[int, Any]:
    return {m.complete.index: m.complete for m in messages if m.HasField("complete")}


async def refused(stub: Any, request: Any) -> grpc.aio.AioRpcError:
    """The error ending a ``Generate`` the worker refuses (any engine's stub)."""
    try:
        await collect(stub, request)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the worker served a request it should have refused")


async def next_batch(call: Any, timeout: float = 5.0) -> Any:
    """The next KvEventBatch that carries events (load-only records are skipped)."""
    while True:
        batch = await asyncio.wait_for(call.read(), timeout)
        assert batch is not grpc.aio.EOF, "the event stream ended"
        if not batch.load.load_only:
            return batch


def stored_blocks(batch: Any) -> list[tuple[int, list[int]]]:
    return [
        (block.block_hash, list(block.token_ids))
        for event in batch.events
        if event.HasField("stored")
        for block in event.stored.blocks
    ]


def removed_hashes(batch: Any) -> list[int]:
    return [h for event in batch.events if event.HasField("removed") for h in event.removed.block_hashes]
