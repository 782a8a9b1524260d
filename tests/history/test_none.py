"""The ``none`` backend accepts every write and returns nothing."""

from __future__ import annotations

from dataplane.history import Conversation, NoHistory, StoredResponse


async def test_accepts_writes_and_returns_nothing() -> None:
    store = NoHistory()
    await store.start()
    item = {"id": "msg_1", "type": "message"}
    await store.create_conversation(Conversation("conv_1", 1), [item])
    await store.put_response(StoredResponse("resp_1", "m", 1, [item], {}), [item])
    await store.put_response(StoredResponse("resp_2", "m", 1, [], {}, "resp_1", "conv_1"), [item])
    assert await store.get_response("resp_1") is None
    assert await store.response_chain("resp_2") is None
    assert await store.get_conversation("conv_1") is None
    assert await store.update_conversation("conv_1", {"a": "b"}) is None
    assert await store.add_items("conv_1", [item]) is False
    assert await store.list_items("conv_1") is None
    assert await store.get_item("conv_1", "msg_1") is None
    assert await store.delete_item("conv_1", "msg_1") is False
    assert await store.delete_response("resp_1") is False
    assert await store.delete_conversation("conv_1") is False
    await store.close()
