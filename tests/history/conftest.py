"""History stores under test: the in-process ones, and the database ones against real servers.

``store`` is parametrized over memory, postgres and redis, so one behaviour suite covers every backend.
Tests share one Postgres database and one Redis server; each test's ids (``uid``) and Redis key prefix are
its own, so tests never see each other's records. ``fresh_database`` gives a test an empty database
(migration tests).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from dataplane.history import HistoryStore, MemoryHistory
from dataplane.history.postgres import PostgresHistory
from dataplane.history.redis import RedisHistory
from tests.services import Server

BACKENDS = ("memory", "postgres", "redis")
DATABASE_BACKENDS = ("postgres", "redis")


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def make_store(backend: str, request: pytest.FixtureRequest, **options: Any) -> HistoryStore:
    """A new, not yet started store of ``backend`` (its server started on first use)."""
    if backend == "memory":
        return MemoryHistory()
    if backend == "postgres":
        server: Server = request.getfixturevalue("postgres_server")
        return PostgresHistory(options.pop("url", server.url), **options)
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        options.setdefault("key_prefix", uid("test"))
        return RedisHistory(options.pop("url", server.url), **options)
    raise AssertionError(backend)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[HistoryStore]:
    history = make_store(request.param, request)
    await history.start()
    yield history
    await history.close()


@pytest.fixture
async def fresh_database(postgres_server: Server) -> AsyncIterator[str]:
    """The URL of a new, empty database on the test server; dropped afterwards."""
    name = uid("t")
    admin = await asyncpg.connect(postgres_server.url_for("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.url_for(name)
    admin = await asyncpg.connect(postgres_server.url_for("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
