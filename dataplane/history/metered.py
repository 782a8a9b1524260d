"""SMG's database metrics around any history backend: ``smg_db_operations_total`` (storage_type,
operation, result), ``smg_db_operation_duration_seconds`` (storage_type, operation) and
``smg_db_items_stored_total`` (storage_type).

``storage_type`` is what an operation is about — ``response``, ``conversation`` or ``conversation_item``
(SMG's values) — and ``operation`` is ``read``, ``write`` or ``delete``; ``result`` is ``success`` or
``error`` (the backend raised, e.g. the database is down; a cancelled call counts as neither). A lookup
that finds nothing is a success. Items stored counts what the writes added: responses, conversations and
conversation items.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Literal, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from dataplane.history.store import Conversation, HistoryStore, Item, ItemPage, Order, StoredResponse

T = TypeVar("T")
Kind = Literal["response", "conversation", "conversation_item"]
Operation = Literal["read", "write", "delete"]
KINDS: tuple[Kind, ...] = ("response", "conversation", "conversation_item")
OPERATIONS: tuple[Operation, ...] = ("read", "write", "delete")


class MeteredHistory:
    """``store`` with every operation counted and timed in ``registry``."""

    def __init__(self, store: HistoryStore, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self._store = store
        self.name = store.name
        operations = Counter(
            "smg_db_operations", "Total database operations by storage_type, operation, result",
            ["storage_type", "operation", "result"], registry=registry,
        )  # fmt: skip
        durations = Histogram(
            "smg_db_operation_duration_seconds", "Database operation duration by storage_type, operation",
            ["storage_type", "operation"], buckets=buckets, registry=registry,
        )  # fmt: skip
        stored = Counter(
            "smg_db_items_stored", "Total items stored by storage_type", ["storage_type"], registry=registry
        )
        self._series = {
            (kind, op): (
                operations.labels(kind, op, "success"),
                operations.labels(kind, op, "error"),
                durations.labels(kind, op),
            )
            for kind in KINDS
            for op in OPERATIONS
        }
        self._stored = {kind: stored.labels(kind) for kind in KINDS}

    async def _metered(self, kind: Kind, operation: Operation, call: Awaitable[T]) -> T:
        succeeded, failed, duration = self._series[kind, operation]
        started = time.perf_counter()
        try:
            result = await call
        except Exception:
            failed.inc()
            raise
        finally:
            duration.observe(time.perf_counter() - started)
        succeeded.inc()
        return result

    async def start(self) -> None:
        await self._store.start()

    async def close(self) -> None:
        await self._store.close()

    # --- responses -----------------------------------------------------------------------------------
    async def put_response(self, response: StoredResponse, conversation_items: Sequence[Item] = ()) -> None:
        await self._metered("response", "write", self._store.put_response(response, conversation_items))
        self._stored["response"].inc()
        if conversation_items and response.conversation_id is not None:
            self._stored["conversation_item"].inc(len(conversation_items))

    async def get_response(self, response_id: str) -> StoredResponse | None:
        return await self._metered("response", "read", self._store.get_response(response_id))

    async def delete_response(self, response_id: str) -> bool:
        return await self._metered("response", "delete", self._store.delete_response(response_id))

    async def response_chain(self, response_id: str, max_depth: int = 100) -> list[StoredResponse] | None:
        return await self._metered("response", "read", self._store.response_chain(response_id, max_depth))

    # --- conversations -------------------------------------------------------------------------------
    async def create_conversation(self, conversation: Conversation, items: Sequence[Item] = ()) -> None:
        await self._metered("conversation", "write", self._store.create_conversation(conversation, items))
        self._stored["conversation"].inc()
        if items:
            self._stored["conversation_item"].inc(len(items))

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return await self._metered("conversation", "read", self._store.get_conversation(conversation_id))

    async def update_conversation(
        self, conversation_id: str, metadata: Mapping[str, str]
    ) -> Conversation | None:
        call = self._store.update_conversation(conversation_id, metadata)
        return await self._metered("conversation", "write", call)

    async def delete_conversation(self, conversation_id: str) -> bool:
        return await self._metered("conversation", "delete", self._store.delete_conversation(conversation_id))

    # --- conversation items --------------------------------------------------------------------------
    async def add_items(self, conversation_id: str, items: Sequence[Item]) -> bool:
        added = await self._metered(
            "conversation_item", "write", self._store.add_items(conversation_id, items)
        )
        if added and items:
            self._stored["conversation_item"].inc(len(items))
        return added

    async def list_items(
        self, conversation_id: str, *, limit: int = 20, order: Order = "desc", after: str | None = None
    ) -> ItemPage | None:
        call = self._store.list_items(conversation_id, limit=limit, order=order, after=after)
        return await self._metered("conversation_item", "read", call)

    async def get_item(self, conversation_id: str, item_id: str) -> Item | None:
        return await self._metered(
            "conversation_item", "read", self._store.get_item(conversation_id, item_id)
        )

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        call = self._store.delete_item(conversation_id, item_id)
        return await self._metered("conversation_item", "delete", call)
