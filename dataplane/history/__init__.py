"""Conversation history: stored responses, conversations and their items, behind one ``HistoryStore``.

``make_history`` builds the backend the configuration names; every backend implements the Protocol in
``dataplane.history.store``.
"""

from __future__ import annotations

from dataplane.config import GatewayConfig
from dataplane.errors import ConfigError
from dataplane.history.memory import MemoryHistory
from dataplane.history.none import NoHistory
from dataplane.history.store import Conversation, HistoryStore, Item, ItemPage, Order, StoredResponse

__all__ = [
    "Conversation",
    "HistoryStore",
    "Item",
    "ItemPage",
    "MemoryHistory",
    "NoHistory",
    "Order",
    "StoredResponse",
    "make_history",
]


def make_history(config: GatewayConfig) -> HistoryStore:
    """The history backend ``config.history`` names; not started yet."""
    backend = config.history.backend
    if backend == "memory":
        return MemoryHistory()
    if backend == "none":
        return NoHistory()
    history = config.history
    # The database clients load only for the backend that uses them.
    if backend == "postgres" and history.postgres_db_url:
        from dataplane.history.postgres import PostgresHistory

        return PostgresHistory(history.postgres_db_url, pool_max_size=history.postgres_pool_max_size)
    if backend == "redis":
        from dataplane.history.redis import RedisHistory

        return RedisHistory(
            history.redis_url,
            pool_max_size=history.redis_pool_max_size,
            retention_days=history.redis_retention_days,
        )
    raise ConfigError(f"history backend {backend!r} is not available")
