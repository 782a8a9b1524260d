"""A database backend that cannot be reached: start-up goes on, every operation fails fast with
``HistoryUnavailable`` (never hangs), and the store recovers by itself once the server is back.

These tests stop and restart the session's servers; the other tests' stores reconnect afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable
from typing import Any

import asyncpg
import pytest

from dataplane.errors import HistoryUnavailable
from dataplane.history import Conversation, HistoryStore, StoredResponse
from dataplane.history.postgres import PostgresHistory, migrations
from tests.history.conftest import DATABASE_BACKENDS, make_store, uid
from tests.services import Server

FAST = 5.0  # seconds: an unreachable server must be reported well within this


async def unavailable(call: Awaitable[Any]) -> None:
    started = time.monotonic()
    with pytest.raises(HistoryUnavailable) as caught:
        await asyncio.wait_for(call, timeout=FAST * 2)
    assert time.monotonic() - started < FAST
    assert caught.value.status == 503 and caught.value.code == "history_unavailable"


async def every_operation_unavailable(store: HistoryStore) -> None:
    conversation = Conversation(uid("conv"), 1)
    await unavailable(store.put_response(StoredResponse(uid("resp"), "m", 1, [], {})))
    await unavailable(store.get_response(uid("resp")))
    await unavailable(store.delete_response(uid("resp")))
    await unavailable(store.response_chain(uid("resp")))
    await unavailable(store.create_conversation(conversation))
    await unavailable(store.get_conversation(conversation.id))
    await unavailable(store.update_conversation(conversation.id, {}))
    await unavailable(store.delete_conversation(conversation.id))
    await unavailable(store.add_items(conversation.id, [{"id": uid("msg"), "type": "message"}]))
    await unavailable(store.list_items(conversation.id))
    await unavailable(store.get_item(conversation.id, uid("msg")))
    await unavailable(store.delete_item(conversation.id, uid("msg")))


async def works(store: HistoryStore) -> None:
    stored = StoredResponse(uid("resp"), "m", 1, [], {"ok": True})
    await asyncio.wait_for(store.put_response(stored), timeout=FAST)
    assert await asyncio.wait_for(store.get_response(stored.id), timeout=FAST) == stored


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
async def test_nothing_listening(backend: str, request: pytest.FixtureRequest) -> None:
    scheme = "postgresql://postgres@" if backend == "postgres" else "redis://"
    store = make_store(backend, request, url=f"{scheme}127.0.0.1:{closed_port()}/0")
    await asyncio.wait_for(store.start(), timeout=FAST)  # logs, does not raise
    await every_operation_unavailable(store)
    await store.close()


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
async def test_server_stopped_and_back(backend: str, request: pytest.FixtureRequest) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    store = make_store(backend, request)
    await store.start()
    await works(store)
    kept = StoredResponse(uid("resp"), "m", 1, [], {"kept": True})
    await store.put_response(kept)
    with server.down():
        await every_operation_unavailable(store)
    await works(store)  # the pool's dead connections were replaced without a restart of the store
    if backend == "postgres":  # Redis keeps nothing across a restart here (no persistence configured)
        assert await store.get_response(kept.id) == kept
    await store.close()


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
async def test_a_frozen_server_times_out(backend: str, request: pytest.FixtureRequest) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    timeouts = {"connect_timeout": 0.5, "command_timeout": 0.5} if backend == "postgres" else {"timeout": 0.5}
    store = make_store(backend, request, **timeouts)
    await store.start()
    await works(store)
    with server.frozen():  # accepts no connection and answers no query, but refuses nothing either
        await unavailable(store.get_response(uid("resp")))
        await unavailable(store.put_response(StoredResponse(uid("resp"), "m", 1, [], {})))
    await works(store)
    await store.close()


async def test_postgres_down_at_start_migrates_once_back(
    postgres_server: Server, fresh_database: str
) -> None:
    store = PostgresHistory(fresh_database)
    with postgres_server.down():
        await asyncio.wait_for(store.start(), timeout=FAST)
        await unavailable(store.get_response(uid("resp")))
    await works(store)
    conn = await asyncpg.connect(fresh_database)
    try:
        versions = [row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert versions == [m.version for m in migrations()]
    await store.close()
