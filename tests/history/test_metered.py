"""SMG's database metrics around a history backend: operations by what they touch, how and with what
result, their durations, and the items the writes stored."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dataplane.errors import HistoryUnavailable
from dataplane.history import Conversation, MemoryHistory, StoredResponse
from dataplane.history.metered import MeteredHistory
from tests.history.test_store import message, response
from tests.scrape import Scrape

OPS = "smg_db_operations_total"


def metered(store: MemoryHistory | None = None) -> tuple[MeteredHistory, CollectorRegistry]:
    registry = CollectorRegistry()
    return MeteredHistory(store or MemoryHistory(), registry, (0.001, 0.01, 0.1)), registry


async def test_every_operation_is_counted_by_storage_type_operation_and_result() -> None:
    history, registry = metered()
    conversation = Conversation(id="conv_1", created_at=1, metadata={})
    await history.create_conversation(conversation, [message("a"), message("b")])
    await history.put_response(response(conversation="conv_1"), [message("q"), message("a", "assistant")])
    stored = response()
    await history.put_response(stored)
    assert await history.response_chain(stored.id) is not None
    assert await history.get_response("resp_unknown") is None  # found nothing: still a success
    page = await history.list_items("conv_1")
    assert page is not None and len(page.items) == 4
    assert await history.add_items("conv_1", [message("c")])
    assert not await history.add_items("conv_unknown", [message("d")])
    assert await history.delete_item("conv_1", page.items[0]["id"])
    assert await history.update_conversation("conv_1", {"k": "v"}) is not None
    assert await history.delete_conversation("conv_1")
    assert await history.delete_response(stored.id)
    got = Scrape(generate_latest(registry).decode())
    expected = {
        ("response", "write"): 2, ("response", "read"): 2, ("response", "delete"): 1,
        ("conversation", "write"): 2, ("conversation", "read"): 0, ("conversation", "delete"): 1,
        ("conversation_item", "write"): 2, ("conversation_item", "read"): 1,
        ("conversation_item", "delete"): 1,
    }  # fmt: skip
    for (kind, op), count in expected.items():
        assert got.value(OPS, storage_type=kind, operation=op, result="success") == count, (kind, op)
        assert got.value("smg_db_operation_duration_seconds_count", storage_type=kind, operation=op) == count
    assert got.value(OPS, result="error") == 0
    stored_items = {"response": 2, "conversation": 1, "conversation_item": 2 + 2 + 1}  # the unknown one: none
    for kind, count in stored_items.items():
        assert got.value("smg_db_items_stored_total", storage_type=kind) == count, kind


class Down(MemoryHistory):
    async def get_response(self, response_id: str) -> StoredResponse | None:
        raise HistoryUnavailable("the history database is unreachable")

    async def put_response(self, response: StoredResponse, conversation_items: object = ()) -> None:
        await asyncio.sleep(3600)  # cancelled by the test


async def test_a_failure_counts_as_an_error_and_a_cancelled_call_as_neither() -> None:
    history, registry = metered(Down())
    with pytest.raises(HistoryUnavailable):
        await history.get_response("resp_1")
    write = asyncio.create_task(history.put_response(response()))
    await asyncio.sleep(0.01)
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    got = Scrape(generate_latest(registry).decode())
    assert got.value(OPS, storage_type="response", operation="read", result="error") == 1
    assert got.value(OPS, storage_type="response", operation="read", result="success") == 0
    assert got.value(OPS, storage_type="response", operation="write") == 0
    assert got.value("smg_db_items_stored_total") == 0
    assert history.name == "memory"
