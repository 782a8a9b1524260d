"""What the worker saw, for tests to assert on: request ids, aborts, cancels, recent requests, metadata.

Requests are stored as received and converted to dicts only when the record is read, so recording costs
the hot path one deque append.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

RECEIVED_LIMIT = 1000
RECENT_LIMIT = 50
# A GetServerInfo answer must stay far below gRPC's 4 MiB default receive limit.
RECORDED_IDS_LIMIT = 1024
RECORDED_TEXT_LIMIT = 8192


class Record:
    def __init__(self) -> None:
        self.received: deque[str] = deque(maxlen=RECEIVED_LIMIT)
        self.aborted: deque[dict[str, Any]] = deque(maxlen=RECEIVED_LIMIT)
        self.cancelled: deque[str] = deque(maxlen=RECEIVED_LIMIT)
        self._requests: deque[Message | Mapping[str, Any]] = deque(maxlen=RECENT_LIMIT)
        self._metadata: deque[Iterable[tuple[str, str | bytes]]] = deque(maxlen=RECENT_LIMIT)

    def request(
        self,
        request_id: str,
        request: Message | Mapping[str, Any],
        metadata: Iterable[tuple[str, str | bytes]],
    ) -> None:
        self.received.append(request_id)
        self._requests.append(request)
        self._metadata.append(metadata)

    def abort(self, request_id: str, reason: str, found: bool) -> None:
        self.aborted.append({"request_id": request_id, "reason": reason, "found": found})

    def cancel(self, request_id: str) -> None:
        self.cancelled.append(request_id)

    def clear(self) -> None:
        for queue in (self.received, self.aborted, self.cancelled, self._requests, self._metadata):
            queue.clear()

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": list(self.received),
            "aborted": list(self.aborted),
            "cancelled": list(self.cancelled),
            "recent_requests": [_request_dict(r) for r in self._requests],
            "metadata": [_metadata_dict(m) for m in self._metadata],
        }


def _request_dict(request: Message | Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(request, Message):
        return dict(request)
    data: dict[str, Any] = MessageToDict(request, preserving_proto_field_name=True)
    tokenized = data.get("tokenized")
    if isinstance(tokenized, dict):
        for field in ("input_ids", "input_token_ids"):  # SGLang's and vLLM's; TensorRT-LLM's
            ids = tokenized.get(field)
            if isinstance(ids, list) and len(ids) > RECORDED_IDS_LIMIT:
                tokenized[field] = ids[:RECORDED_IDS_LIMIT]
                tokenized[f"{field}_count"] = len(ids)
        text = tokenized.get("original_text")
        if isinstance(text, str) and len(text) > RECORDED_TEXT_LIMIT:
            tokenized["original_text"] = text[:RECORDED_TEXT_LIMIT]
    return data


def _metadata_dict(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in metadata:
        # gRPC metadata keys are lower-case already; HTTP header case varies by client.
        out[key.lower()] = value if isinstance(value, str) else value.hex()
    return out
