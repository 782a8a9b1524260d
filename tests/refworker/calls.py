"""Client-side helpers: build SGLang requests and take responses apart, as a real client would."""

from __future__ import annotations

from typing import Any

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
