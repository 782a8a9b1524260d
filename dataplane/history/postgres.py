"""The ``postgres`` history backend: an asyncpg pool over SMG's tables, migrated at start-up.

Schema changes are numbered SQL files (``migrations/postgres/NNNN_name.sql``), each applied once in its
own transaction and recorded in ``schema_migrations``; an advisory lock serialises gateways that start
together. Every write that touches several rows is one statement or one transaction. A server that cannot
be reached makes each operation raise ``HistoryUnavailable``; the next one connects again, and the first
that succeeds applies the migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
import orjson

from dataplane.errors import NotFound
from dataplane.history.connectivity import Connectivity
from dataplane.history.store import Conversation, Item, ItemPage, Order, StoredResponse

logger = logging.getLogger(__name__)

MIGRATION_LOCK = 0x736D675F68697374  # pg_advisory_lock key ("smg_hist"): one migrating gateway at a time
_LOST_CONNECTION: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash, "cannot connect now"
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
)

_RESPONSE_COLUMNS = (
    "id, model, extract(epoch FROM created_at)::bigint AS created_at, input, raw_response,"
    " previous_response_id, conversation_id, safety_identifier"
)
_PUT_RESPONSE = """
INSERT INTO responses (id, model, created_at, input, raw_response, previous_response_id, conversation_id,
                       safety_identifier)
VALUES ($1, $2, to_timestamp($3), $4, $5, $6, $7, $8)
ON CONFLICT (id) DO UPDATE SET model = EXCLUDED.model, created_at = EXCLUDED.created_at,
    input = EXCLUDED.input, raw_response = EXCLUDED.raw_response,
    previous_response_id = EXCLUDED.previous_response_id, conversation_id = EXCLUDED.conversation_id,
    safety_identifier = EXCLUDED.safety_identifier
"""
_GET_RESPONSE = f"SELECT {_RESPONSE_COLUMNS} FROM responses WHERE id = $1"
_RESPONSE_CHAIN = f"""
WITH RECURSIVE chain AS (
    SELECT r.*, 1 AS depth FROM responses r WHERE r.id = $1
    UNION ALL
    SELECT r.*, chain.depth + 1 FROM responses r JOIN chain ON r.id = chain.previous_response_id
    WHERE chain.depth < $2
)
SELECT {_RESPONSE_COLUMNS} FROM chain ORDER BY depth DESC
"""
_CONVERSATION_COLUMNS = "id, extract(epoch FROM created_at)::bigint AS created_at, metadata"
_PUT_CONVERSATION = """
INSERT INTO conversations (id, created_at, metadata) VALUES ($1, to_timestamp($2), $3)
ON CONFLICT (id) DO UPDATE SET created_at = EXCLUDED.created_at, metadata = EXCLUDED.metadata
"""
_GET_CONVERSATION = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"
# Appends to one conversation take turns, so the items of one write stay together in the order.
_LOCK_CONVERSATION = "SELECT 1 FROM conversations WHERE id = $1 FOR NO KEY UPDATE"
_UPDATE_CONVERSATION = (
    f"UPDATE conversations SET metadata = $2 WHERE id = $1 RETURNING {_CONVERSATION_COLUMNS}"
)
# Links go first: deleting the items they held would cascade to them in the same statement.
_DELETE_CONVERSATION = """
WITH conversation AS (DELETE FROM conversations WHERE id = $1 RETURNING id),
unlinked AS (DELETE FROM conversation_item_links WHERE conversation_id = $1 RETURNING item_id),
orphaned AS (
    DELETE FROM conversation_items i WHERE i.id IN (SELECT item_id FROM unlinked)
    AND NOT EXISTS (
        SELECT 1 FROM conversation_item_links l WHERE l.item_id = i.id AND l.conversation_id <> $1)
)
SELECT count(*) FROM conversation
"""
_PUT_ITEM = """
INSERT INTO conversation_items (id, response_id, item_type, role, status, item)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE SET response_id = EXCLUDED.response_id, item_type = EXCLUDED.item_type,
    role = EXCLUDED.role, status = EXCLUDED.status, item = EXCLUDED.item
"""
_LINK_ITEM = """
INSERT INTO conversation_item_links (conversation_id, item_id) VALUES ($1, $2) ON CONFLICT DO NOTHING
"""
_CONVERSATION_EXISTS = "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1)"
# An unknown cursor compares with NULL: no rows, as the memory backend answers.
_LIST_ITEMS = """
SELECT i.item FROM conversation_item_links l JOIN conversation_items i ON i.id = l.item_id
WHERE l.conversation_id = $1 AND ($2::text IS NULL OR l.seq {op} (
    SELECT seq FROM conversation_item_links WHERE conversation_id = $1 AND item_id = $2))
ORDER BY l.seq {direction} LIMIT $3
"""
_LIST_ASC = _LIST_ITEMS.format(op=">", direction="ASC")
_LIST_DESC = _LIST_ITEMS.format(op="<", direction="DESC")
_GET_ITEM = """
SELECT i.item FROM conversation_item_links l JOIN conversation_items i ON i.id = l.item_id
WHERE l.conversation_id = $1 AND l.item_id = $2
"""
_DELETE_ITEM = """
WITH unlinked AS (
    DELETE FROM conversation_item_links WHERE conversation_id = $1 AND item_id = $2 RETURNING item_id
),
orphaned AS (
    DELETE FROM conversation_items WHERE id IN (SELECT item_id FROM unlinked)
    AND NOT EXISTS (SELECT 1 FROM conversation_item_links WHERE item_id = $2 AND conversation_id <> $1)
)
SELECT count(*) FROM unlinked
"""
_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The schema migrations shipped with the package, in version order (1, 2, … without gaps)."""
    folder = resources.files("dataplane.history") / "migrations" / "postgres"
    found = []
    for entry in folder.iterdir():
        if match := re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name):
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"postgres migrations must be numbered 1..n: {[m.version for m in found]}")
    return found


async def apply_migrations(conn: Any) -> list[int]:
    """Apply the migrations ``conn``'s database lacks; the versions applied now (none when up to date)."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(_CREATE_MIGRATIONS_TABLE)
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            logger.info("postgres history: applied migration %04d_%s", migration.version, migration.name)
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


class PostgresHistory:
    """Responses and conversations in PostgreSQL (``--history-backend postgres``)."""

    name = "postgres"

    def __init__(
        self,
        url: str,
        *,
        pool_max_size: int = 16,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._pool_max_size = pool_max_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._migrated = False
        self._starting = asyncio.Lock()
        self._connectivity = Connectivity("postgres", _LOST_CONNECTION)

    async def start(self) -> None:
        try:
            async with self._connection():
                pass
        except Exception as exc:  # HistoryUnavailable (logged), or a migration that failed
            logger.warning("postgres history: not ready (%s); every request will try again", exc)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self._connect_timeout)
            except _LOST_CONNECTION:
                pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection to a migrated database; connection failures are ``HistoryUnavailable``."""
        with self._connectivity.guard():
            if self._pool is None or not self._migrated:
                await self._prepare()
            assert self._pool is not None
            async with self._pool.acquire(timeout=self._connect_timeout) as conn:
                yield conn

    async def _prepare(self) -> None:
        async with self._starting:
            if self._pool is None:
                # min_size=0: creating the pool connects nowhere; connections are opened on demand.
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=0,
                    max_size=self._pool_max_size,
                    timeout=self._connect_timeout,
                    command_timeout=self._command_timeout,
                    server_settings={"application_name": "smg-history"},
                )
            if not self._migrated:
                async with self._pool.acquire(timeout=self._connect_timeout) as conn:
                    await apply_migrations(conn)
                self._migrated = True

    # --- responses -----------------------------------------------------------------------------------
    async def put_response(self, response: StoredResponse, conversation_items: Sequence[Item] = ()) -> None:
        row = (
            response.id,
            response.model,
            float(response.created_at),
            _json(response.input),
            _json(response.raw),
            response.previous_response_id,
            response.conversation_id,
            response.safety_identifier,
        )
        async with self._connection() as conn:
            if response.conversation_id is None:
                await conn.execute(_PUT_RESPONSE, *row)
                return
            async with conn.transaction():
                if await conn.fetchval(_LOCK_CONVERSATION, response.conversation_id) is None:
                    raise NotFound(
                        f"conversation {response.conversation_id!r} not found", param="conversation"
                    )
                await conn.execute(_PUT_RESPONSE, *row)
                await _link_items(conn, response.conversation_id, conversation_items, response.id)

    async def get_response(self, response_id: str) -> StoredResponse | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(_GET_RESPONSE, response_id)
        return None if row is None else _response(row)

    async def delete_response(self, response_id: str) -> bool:
        async with self._connection() as conn:
            status = await conn.execute("DELETE FROM responses WHERE id = $1", response_id)
        return bool(status == "DELETE 1")

    async def response_chain(self, response_id: str, max_depth: int = 100) -> list[StoredResponse] | None:
        async with self._connection() as conn:
            rows = await conn.fetch(_RESPONSE_CHAIN, response_id, max(max_depth, 1))
        if not rows:
            return None
        return [_response(row) for row in rows] if max_depth > 0 else []

    # --- conversations -------------------------------------------------------------------------------
    async def create_conversation(self, conversation: Conversation, items: Sequence[Item] = ()) -> None:
        row = (conversation.id, float(conversation.created_at), _json(conversation.metadata))
        async with self._connection() as conn, conn.transaction():
            await conn.execute(_PUT_CONVERSATION, *row)
            await _link_items(conn, conversation.id, items, None)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(_GET_CONVERSATION, conversation_id)
        return None if row is None else _conversation(row)

    async def update_conversation(
        self, conversation_id: str, metadata: Mapping[str, str]
    ) -> Conversation | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(_UPDATE_CONVERSATION, conversation_id, _json(dict(metadata)))
        return None if row is None else _conversation(row)

    async def delete_conversation(self, conversation_id: str) -> bool:
        async with self._connection() as conn:
            return bool(await conn.fetchval(_DELETE_CONVERSATION, conversation_id))

    # --- conversation items --------------------------------------------------------------------------
    async def add_items(self, conversation_id: str, items: Sequence[Item]) -> bool:
        async with self._connection() as conn, conn.transaction():
            if await conn.fetchval(_LOCK_CONVERSATION, conversation_id) is None:
                return False
            await _link_items(conn, conversation_id, items, None)
            return True

    async def list_items(
        self, conversation_id: str, *, limit: int = 20, order: Order = "desc", after: str | None = None
    ) -> ItemPage | None:
        query = _LIST_ASC if order == "asc" else _LIST_DESC
        async with self._connection() as conn:
            if not await conn.fetchval(_CONVERSATION_EXISTS, conversation_id):
                return None
            rows = await conn.fetch(query, conversation_id, after, limit + 1)
        return ItemPage(items=[orjson.loads(row["item"]) for row in rows[:limit]], has_more=len(rows) > limit)

    async def get_item(self, conversation_id: str, item_id: str) -> Item | None:
        async with self._connection() as conn:
            found = await conn.fetchval(_GET_ITEM, conversation_id, item_id)
        return None if found is None else _item(found)

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        async with self._connection() as conn:
            return bool(await conn.fetchval(_DELETE_ITEM, conversation_id, item_id))


async def _link_items(
    conn: Any, conversation_id: str, items: Sequence[Item], response_id: str | None
) -> None:
    """Store ``items`` and append them to the conversation, in order (inside the caller's transaction)."""
    if not items:
        return
    await conn.executemany(
        _PUT_ITEM,
        [
            (item["id"], response_id, item["type"], item.get("role"), item.get("status"), _json(item))
            for item in items
        ],
    )
    # One row per execution, in order: each link's seq is drawn after the previous one's.
    await conn.executemany(_LINK_ITEM, [(conversation_id, item["id"]) for item in items])


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _item(text: str) -> Item:
    item: Item = orjson.loads(text)
    return item


def _response(row: Mapping[str, Any]) -> StoredResponse:
    return StoredResponse(
        id=row["id"],
        model=row["model"],
        created_at=row["created_at"],
        input=orjson.loads(row["input"]),
        raw=orjson.loads(row["raw_response"]),
        previous_response_id=row["previous_response_id"],
        conversation_id=row["conversation_id"],
        safety_identifier=row["safety_identifier"],
    )


def _conversation(row: Mapping[str, Any]) -> Conversation:
    return Conversation(id=row["id"], created_at=row["created_at"], metadata=orjson.loads(row["metadata"]))
