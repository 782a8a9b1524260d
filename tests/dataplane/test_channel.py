"""Worker channels send per-request trace context as never-indexed HPACK literals; the rest is unchanged."""

from __future__ import annotations

import os

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

from dataplane.channel import UniqueValueEncoder
from dataplane.client import SglangClient
from dataplane.types import Complete, SamplingParams, WireRequest
from refworker.config import WorkerConfig
from refworker.server import RefWorker

BASE = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/sglang.grpc.scheduler.SglangScheduler/Generate"),
    (":authority", "127.0.0.1:31000"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("authorization", "Bearer k"),
]


def traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def test_trace_context_is_a_plain_never_indexed_literal_and_the_rest_is_indexed() -> None:
    encoder, decoder = UniqueValueEncoder(), Decoder()
    sizes = []
    for _ in range(100):
        headers = [*BASE, ("traceparent", traceparent()), ("tracestate", "vendor=1")]
        block = encoder.encode(headers)
        decoded = decoder.decode(block)
        assert decoded == headers
        assert isinstance(decoded[-2], NeverIndexedHeaderTuple)  # intermediaries must not index it either
        assert not isinstance(decoded[0], NeverIndexedHeaderTuple)
        sizes.append(len(block))
    table = [name for name, _ in encoder.header_table.dynamic_entries]
    assert b"traceparent" not in table
    assert {b":path", b"authorization", b"tracestate"} <= set(table)  # repeating headers still indexed
    # After the first request each repeating header is one byte (an index); the trace context is a
    # prefix byte, the name's length and name, the value's length and the 55 characters as they are.
    assert sizes[-1] < sizes[0]
    assert sizes[-1] == len(BASE) + 1 + (1 + 1 + len("traceparent") + 1 + 55)


@pytest.mark.parametrize("length", [0, 55, 0x7E, 0x7F, 300])
def test_the_literal_is_what_hpack_itself_writes_for_a_never_indexed_header(length: int) -> None:
    value = b"0" * length
    ours = UniqueValueEncoder().encode([(b"traceparent", value)])
    assert ours == Encoder().encode([(b"traceparent", value, True)], huffman=False)
    assert Decoder().decode(ours, raw=True) == [(b"traceparent", value)]


def test_a_plain_encoder_would_have_filled_its_table_with_dead_trace_ids() -> None:
    encoder = Encoder()  # the contrast the module is about
    for _ in range(100):
        encoder.encode([*BASE, ("traceparent", traceparent())])
    table = [name for name, _ in encoder.header_table.dynamic_entries]
    assert table.count(b"traceparent") > 20


async def test_generate_over_the_worker_channel_carries_every_traceparent() -> None:
    worker = RefWorker(WorkerConfig(host="127.0.0.1", port=0))
    port = await worker.start()
    client = SglangClient("127.0.0.1", port)
    try:
        sent = []
        for i in range(20):
            parent = traceparent()
            sent.append(parent)
            wire = WireRequest(
                request_id=f"r{i}",
                input_ids=[1, 2, 3],
                original_text="hi",
                sampling=SamplingParams(max_tokens=2),
                stop_token_ids=(),
                stream=True,
                metadata={"traceparent": parent},
            )
            messages = [message async for message in client.generate(wire)]
            assert isinstance(messages[-1], Complete)
        seen = [m.get("traceparent") for m in worker.engine.record.to_dict()["metadata"]]
        assert seen[-20:] == sent
        connection = client._channel._protocol.connection._connection  # type: ignore[union-attr]
        assert isinstance(connection.encoder, UniqueValueEncoder)
        assert b"traceparent" not in [name for name, _ in connection.encoder.header_table.dynamic_entries]
    finally:
        client.close()
        await worker.stop(grace=0)
