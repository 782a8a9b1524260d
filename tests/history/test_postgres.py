"""The postgres backend's own promises: versioned migrations at start-up, and all-or-nothing writes."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from dataplane.history import Conversation, StoredResponse
from dataplane.history.postgres import PostgresHistory, apply_migrations, migrations
from tests.history.conftest import uid
from tests.services import Server

TABLES = {"responses", "conversations", "conversation_items", "conversation_item_links", "schema_migrations"}


async def recorded(url: str) -> list[tuple[int, str, object]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        return [(row["version"], row["name"], row["applied_at"]) for row in rows]
    finally:
        await conn.close()


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


def test_migrations_are_numbered_from_one() -> None:
    found = migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "init" and "CREATE TABLE conversation_item_links" in found[0].sql


async def test_start_migrates_an_empty_database_once(fresh_database: str) -> None:
    store = PostgresHistory(fresh_database)
    await store.start()
    await store.close()
    assert await tables(fresh_database) == TABLES
    first = await recorded(fresh_database)
    assert [(version, name) for version, name, _ in first] == [(m.version, m.name) for m in migrations()]

    again = PostgresHistory(fresh_database)  # a restart: nothing left to apply, nothing re-applied
    await again.start()
    await again.close()
    assert await recorded(fresh_database) == first
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await apply_migrations(conn) == []
    finally:
        await conn.close()


async def test_gateways_starting_together_migrate_once(fresh_database: str) -> None:
    stores = [PostgresHistory(fresh_database) for _ in range(4)]
    await asyncio.gather(*(store.start() for store in stores))
    stored = StoredResponse(uid("resp"), "m", 1, [], {"ok": True})
    # Every one of them is ready: none saw the others' half-made schema.
    await asyncio.gather(*(store.put_response(stored) for store in stores))
    for store in stores:
        assert await store.get_response(stored.id) == stored
        await store.close()
    assert [version for version, _, _ in await recorded(fresh_database)] == [m.version for m in migrations()]


async def test_a_failed_turn_leaves_nothing_behind(postgres_server: Server) -> None:
    store = PostgresHistory(postgres_server.url)
    await store.start()
    conversation_id = uid("conv")
    await store.create_conversation(Conversation(conversation_id, 1))
    good = {"id": uid("msg"), "type": "message"}
    stored = StoredResponse(uid("resp"), "m", 1, [], {}, conversation_id=conversation_id)
    # The second item breaks a NOT NULL constraint: the response and the first item must not stay.
    with pytest.raises(asyncpg.NotNullViolationError):
        await store.put_response(stored, [good, {"id": None, "type": "message"}])
    assert await store.get_response(stored.id) is None
    page = await store.list_items(conversation_id)
    assert page is not None and page.items == []
    await store.close()
