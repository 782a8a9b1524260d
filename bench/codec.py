"""Message codec cost on the Generate hot path: betterproto2 (proto/_gen) vs protobuf's upb classes.

    .venv/bin/python bench/codec.py

Prints µs per operation for encoding a chat-sized GenerateRequest (140 prompt ids) and parsing a streamed
chunk (8 ids) and a non-streaming complete (64 ids). Both sides are the same .proto from smg-grpc-proto,
so the wire bytes are interchangeable; the figures decide which classes dataplane/client.py uses.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb

from proto._gen.sglang.grpc import scheduler as bp


def request(mod: object) -> bytes:
    m = mod  # the two modules expose the same message names and fields
    msg = m.GenerateRequest(  # type: ignore[attr-defined]
        request_id="chatcmpl-" + "x" * 24,
        tokenized=m.TokenizedInput(original_text="a" * 600, input_ids=list(range(140))),  # type: ignore[attr-defined]
        sampling_params=m.SamplingParams(  # type: ignore[attr-defined]
            temperature=1.0,
            top_p=1.0,
            top_k=-1,
            max_new_tokens=64,
            n=1,
            repetition_penalty=1.0,
            skip_special_tokens=True,
            spaces_between_special_tokens=True,
        ),
        stream=True,
        logprob_start_len=-1,
    )
    return msg.SerializeToString() if hasattr(msg, "SerializeToString") else bytes(msg)


def chunk_bytes(ids: int, complete: bool) -> bytes:
    if complete:
        body = pb.GenerateComplete(
            output_ids=range(1000, 1000 + ids), finish_reason="length", prompt_tokens=140
        )
        return bytes(pb.GenerateResponse(request_id="r" * 33, complete=body).SerializeToString())
    body2 = pb.GenerateStreamChunk(token_ids=range(1000, 1000 + ids), prompt_tokens=140, completion_tokens=8)
    return bytes(pb.GenerateResponse(request_id="r" * 33, chunk=body2).SerializeToString())


def per_call_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    chunk, complete = chunk_bytes(8, False), chunk_bytes(64, True)
    rows = [
        ("encode GenerateRequest (140 ids)", lambda: request(bp), lambda: request(pb), 2000),
        (
            "parse stream chunk (8 ids)",
            lambda: bp.GenerateResponse.parse(chunk),
            lambda: pb.GenerateResponse.FromString(chunk),
            20000,
        ),
        (
            "parse complete (64 ids)",
            lambda: bp.GenerateResponse.parse(complete),
            lambda: pb.GenerateResponse.FromString(complete),
            20000,
        ),
    ]
    print(f"{'operation':36} {'betterproto2 µs':>16} {'protobuf-upb µs':>16} {'ratio':>8}")
    for name, slow, fast, number in rows:
        a, b = per_call_us(slow, number), per_call_us(fast, number)
        print(f"{name:36} {a:16.2f} {b:16.2f} {a / b:8.1f}")


if __name__ == "__main__":
    main()
