"""The redis backend's own promises: every key it writes gets the retention time to live."""

from __future__ import annotations

import pytest
import redis.asyncio

from dataplane.history import Conversation, StoredResponse
from dataplane.history.redis import RedisHistory
from tests.history.conftest import uid
from tests.services import Server

DAY = 86400


async def write_everything(store: RedisHistory) -> None:
    conversation_id = uid("conv")
    await store.create_conversation(Conversation(conversation_id, 1), [{"id": uid("msg"), "type": "message"}])
    await store.add_items(conversation_id, [{"id": uid("msg"), "type": "message"}])
    first = StoredResponse(uid("resp"), "m", 1, [], {})
    await store.put_response(first)
    turn = [{"id": uid("msg"), "type": "message"}]
    await store.put_response(
        StoredResponse(
            uid("resp"), "m", 2, turn, {}, previous_response_id=first.id, conversation_id=conversation_id
        ),
        turn,
    )
    await store.update_conversation(conversation_id, {"k": "v"})


@pytest.mark.parametrize(("days", "expected"), [(2, (2 * DAY - 60, 2 * DAY)), (-1, (-1, -1))])
async def test_every_key_gets_the_retention(
    redis_server: Server, days: int, expected: tuple[int, int]
) -> None:
    prefix = uid("ttl")
    store = RedisHistory(redis_server.url, retention_days=days, key_prefix=prefix)
    await store.start()
    await write_everything(store)
    await store.close()
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        # 2 responses, and the conversation's hash, item order and items.
        assert len(keys) == 5
        for key in keys:
            assert expected[0] <= await client.ttl(key) <= expected[1], key
    finally:
        await client.aclose()
