"""What tests read of a worker: its record (requests received, aborts, cancellations) and counters.

SGLang's ``GetServerInfo`` carries it in ``scheduler_info``; vLLM's and TensorRT-LLM's have no such field, so
a worker serving either of their services also answers ``/refworker.Control/Record`` (a
``google.protobuf.Struct``) — a method no engine has, which a gateway never calls.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.struct_pb2 import Struct

from refworker.engine import Engine

SERVICE = "refworker.Control"
RECORD_METHOD = f"/{SERVICE}/Record"


def record(engine: Engine) -> dict[str, Any]:
    counters = engine.counters
    return engine.record.to_dict() | {
        "served_requests": engine.total_requests,
        "prompt_tokens": counters.prompt_tokens,
        "cached_tokens": counters.cached_tokens,
        "kv_event_subscribers": engine.events.subscribers,
    }


def record_handler(engine: Engine) -> grpc.GenericRpcHandler:
    async def answer(request: Empty, context: Any) -> Struct:
        reply = Struct()
        reply.update(record(engine))
        return reply

    method = grpc.unary_unary_rpc_method_handler(
        answer, request_deserializer=Empty.FromString, response_serializer=Struct.SerializeToString
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"Record": method})
