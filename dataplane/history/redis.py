"""The ``redis`` history backend: redis-py's asyncio client, one Lua script per multi-key write.

Keys (``P`` is the key prefix)::

    P:response:ID                   hash: data (the StoredResponse as JSON), prev (previous_response_id)
    P:conversation:ID               hash: created_at, metadata (JSON)
    P:conversation:ID:order         sorted set: item ids, scored 1, 2, 3… in insertion order
    P:conversation:ID:items         hash: item id -> item JSON

A conversation's items live with it, so its three keys expire together: every write sets the time to live
(``--redis-retention-days``; -1 keeps keys forever) on each key it touches. A script runs atomically, so a
response and the items it appends to its conversation are stored together or not at all. Scripts build the
keys of a response chain themselves: this backend is for a single Redis server, not a cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import orjson
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dataplane.errors import NotFound
from dataplane.history.connectivity import Connectivity
from dataplane.history.store import Conversation, Item, ItemPage, Order, StoredResponse

logger = logging.getLogger(__name__)

_Arg = bytes | str | int | float  # what a script takes as an argument

_LOST_CONNECTION: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # also a pool with no connection left within its timeout
    redis.exceptions.TimeoutError,
    OSError,
    TimeoutError,
)

# KEYS[1..3] are always a conversation's keys; ARGV[1] is the time to live in seconds (-1: none).
_COMMON = """
local ttl = tonumber(ARGV[1])
local function touch()
  if ttl > 0 then
    for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
local function append(first)
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  local seq = tonumber(last[2] or '0')
  for i = first, #ARGV, 2 do
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    if redis.call('ZADD', KEYS[2], 'NX', seq + 1, ARGV[i]) == 1 then seq = seq + 1 end
  end
end
"""
# ARGV: ttl, created_at, metadata, then item id / item JSON pairs.
_CREATE_CONVERSATION = (
    _COMMON
    + """
redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'metadata', ARGV[3])
append(4)
touch()
return 1
"""
)
# ARGV: ttl, then item id / item JSON pairs. 0: no such conversation (nothing written).
_ADD_ITEMS = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
append(2)
touch()
return 1
"""
)
# KEYS[4]: the response. ARGV: ttl, data, prev, '1' when in the conversation, then item pairs.
_PUT_RESPONSE = (
    _COMMON
    + """
local in_conversation = ARGV[4] == '1'
if in_conversation and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[4], 'data', ARGV[2], 'prev', ARGV[3])
if ttl > 0 then redis.call('EXPIRE', KEYS[4], ttl) end
if in_conversation then
  append(5)
  touch()
end
return 1
"""
)
# ARGV: ttl, metadata. The created_at of the conversation, or nil when there is none.
_UPDATE_CONVERSATION = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'metadata', ARGV[2])
touch()
return redis.call('HGET', KEYS[1], 'created_at')
"""
)
# ARGV: 'asc' or 'desc', limit, cursor ('' for none). nil: no such conversation; else {has_more, items…}.
# An unknown cursor matches nothing, as in the other backends.
_LIST_ITEMS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local limit = tonumber(ARGV[2])
local asc = ARGV[1] == 'asc'
local ids
if ARGV[3] ~= '' then
  local score = redis.call('ZSCORE', KEYS[2], ARGV[3])
  if not score then return {0} end
  if asc then
    ids = redis.call('ZRANGE', KEYS[2], '(' .. score, '+inf', 'BYSCORE', 'LIMIT', 0, limit + 1)
  else
    ids = redis.call('ZRANGE', KEYS[2], '(' .. score, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, limit + 1)
  end
elseif asc then
  ids = redis.call('ZRANGE', KEYS[2], 0, limit)
else
  ids = redis.call('ZRANGE', KEYS[2], 0, limit, 'REV')
end
local more = 0
if #ids > limit then
  more = 1
  table.remove(ids)
end
if #ids == 0 then return {more} end
local items = redis.call('HMGET', KEYS[3], unpack(ids))
table.insert(items, 1, more)
return items
"""
# 1 when the conversation existed.
_DELETE_CONVERSATION = """
local deleted = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3])
return deleted
"""
# ARGV: item id. 1 when it was in the conversation.
_DELETE_ITEM = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""
# ARGV: response key prefix, response id, max depth. The data of the chain, newest first.
_RESPONSE_CHAIN = """
local chain = {}
local id = ARGV[2]
for _ = 1, tonumber(ARGV[3]) do
  local found = redis.call('HMGET', ARGV[1] .. id, 'data', 'prev')
  if not found[1] then break end
  chain[#chain + 1] = found[1]
  if not found[2] or found[2] == '' then break end
  id = found[2]
end
return chain
"""


class RedisHistory:
    """Responses and conversations in Redis (``--history-backend redis``)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        pool_max_size: int = 16,
        retention_days: int = 30,
        key_prefix: str = "smg",
        timeout: float = 5.0,
    ) -> None:
        # One retry, at once: it replaces a pooled connection that a server restart closed. Anything more
        # would only make an outage slower to report.
        self._pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_max_size,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._client = redis.asyncio.Redis(connection_pool=self._pool)
        self._ttl = str(retention_days * 86400 if retention_days > 0 else -1)
        self._prefix = key_prefix
        self._connectivity = Connectivity("redis", _LOST_CONNECTION)
        script = self._client.register_script
        self._create_conversation = script(_CREATE_CONVERSATION)
        self._add_items = script(_ADD_ITEMS)
        self._put_response = script(_PUT_RESPONSE)
        self._update_conversation = script(_UPDATE_CONVERSATION)
        self._list_items = script(_LIST_ITEMS)
        self._delete_item = script(_DELETE_ITEM)
        self._delete_conversation = script(_DELETE_CONVERSATION)
        self._response_chain = script(_RESPONSE_CHAIN)

    async def start(self) -> None:
        try:
            with self._connectivity.guard():
                await self._client.ping()
        except Exception as exc:  # HistoryUnavailable (logged)
            logger.warning("redis history: not ready (%s); every request will try again", exc)

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.disconnect()

    # --- keys ----------------------------------------------------------------------------------------
    def _response_key(self, response_id: str) -> str:
        return f"{self._prefix}:response:{response_id}"

    def _conversation_keys(self, conversation_id: str) -> list[str]:
        base = f"{self._prefix}:conversation:{conversation_id}"
        return [base, f"{base}:order", f"{base}:items"]

    # --- responses -----------------------------------------------------------------------------------
    async def put_response(self, response: StoredResponse, conversation_items: Sequence[Item] = ()) -> None:
        conversation = response.conversation_id
        keys = [*self._conversation_keys(conversation or ""), self._response_key(response.id)]
        data = orjson.dumps(
            {
                "id": response.id,
                "model": response.model,
                "created_at": response.created_at,
                "input": response.input,
                "raw": response.raw,
                "previous_response_id": response.previous_response_id,
                "conversation_id": conversation,
                "safety_identifier": response.safety_identifier,
            }
        )
        args: list[_Arg] = [
            self._ttl,
            data,
            response.previous_response_id or "",
            "1" if conversation else "0",
        ]
        if conversation:
            args += _item_pairs(conversation_items)
        with self._connectivity.guard():
            stored = await self._put_response(keys=keys, args=args)
        if not stored:
            raise NotFound(f"conversation {conversation!r} not found", param="conversation")

    async def get_response(self, response_id: str) -> StoredResponse | None:
        with self._connectivity.guard():
            data = await self._client.hget(self._response_key(response_id), "data")
        return None if data is None else _response(data)

    async def delete_response(self, response_id: str) -> bool:
        with self._connectivity.guard():
            return bool(await self._client.delete(self._response_key(response_id)))

    async def response_chain(self, response_id: str, max_depth: int = 100) -> list[StoredResponse] | None:
        args: list[_Arg] = [self._response_key(""), response_id, max(max_depth, 1)]
        with self._connectivity.guard():
            found = await self._response_chain(keys=[], args=args)
        if not found:
            return None
        return [_response(data) for data in reversed(found)] if max_depth > 0 else []

    # --- conversations -------------------------------------------------------------------------------
    async def create_conversation(self, conversation: Conversation, items: Sequence[Item] = ()) -> None:
        args: list[_Arg] = [
            self._ttl,
            conversation.created_at,
            orjson.dumps(conversation.metadata),
            *_item_pairs(items),
        ]
        with self._connectivity.guard():
            await self._create_conversation(keys=self._conversation_keys(conversation.id), args=args)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        key = self._conversation_keys(conversation_id)[0]
        with self._connectivity.guard():
            created_at, metadata = await self._client.hmget(key, ["created_at", "metadata"])
        if created_at is None:
            return None
        return Conversation(conversation_id, int(created_at), orjson.loads(metadata or b"{}"))

    async def update_conversation(
        self, conversation_id: str, metadata: Mapping[str, str]
    ) -> Conversation | None:
        args: list[_Arg] = [self._ttl, orjson.dumps(dict(metadata))]
        with self._connectivity.guard():
            created_at = await self._update_conversation(
                keys=self._conversation_keys(conversation_id), args=args
            )
        if created_at is None:
            return None
        return Conversation(id=conversation_id, created_at=int(created_at), metadata=dict(metadata))

    async def delete_conversation(self, conversation_id: str) -> bool:
        with self._connectivity.guard():
            return bool(await self._delete_conversation(keys=self._conversation_keys(conversation_id)))

    # --- conversation items --------------------------------------------------------------------------
    async def add_items(self, conversation_id: str, items: Sequence[Item]) -> bool:
        args: list[_Arg] = [self._ttl, *_item_pairs(items)]
        with self._connectivity.guard():
            return bool(await self._add_items(keys=self._conversation_keys(conversation_id), args=args))

    async def list_items(
        self, conversation_id: str, *, limit: int = 20, order: Order = "desc", after: str | None = None
    ) -> ItemPage | None:
        args: list[_Arg] = [order, limit, after or ""]
        with self._connectivity.guard():
            found = await self._list_items(keys=self._conversation_keys(conversation_id), args=args)
        if found is None:
            return None
        more, *items = found
        return ItemPage(items=[orjson.loads(item) for item in items if item is not None], has_more=bool(more))

    async def get_item(self, conversation_id: str, item_id: str) -> Item | None:
        key = self._conversation_keys(conversation_id)[2]
        with self._connectivity.guard():
            found = await self._client.hget(key, item_id)
        return None if found is None else _item(found)

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        with self._connectivity.guard():
            return bool(
                await self._delete_item(keys=self._conversation_keys(conversation_id), args=[item_id])
            )


def _item_pairs(items: Sequence[Item]) -> list[_Arg]:
    return [value for item in items for value in (item["id"], orjson.dumps(item))]


def _item(data: bytes | str) -> Item:
    item: Item = orjson.loads(data)
    return item


def _response(data: bytes | str) -> StoredResponse:
    fields = orjson.loads(data)
    return StoredResponse(
        id=fields["id"],
        model=fields["model"],
        created_at=fields["created_at"],
        input=fields["input"],
        raw=fields["raw"],
        previous_response_id=fields["previous_response_id"],
        conversation_id=fields["conversation_id"],
        safety_identifier=fields["safety_identifier"],
    )
