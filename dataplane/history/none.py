"""The ``none`` history backend: accepts every write and keeps nothing (SMG's ``none``).

A response stored here cannot be retrieved or continued; a conversation created here is never found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dataplane.history.store import Conversation, Item, ItemPage, Order, StoredResponse


class NoHistory:
    name = "none"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put_response(self, response: StoredResponse, conversation_items: Sequence[Item] = ()) -> None:
        return None

    async def get_response(self, response_id: str) -> StoredResponse | None:
        return None

    async def delete_response(self, response_id: str) -> bool:
        return False

    async def response_chain(self, response_id: str, max_depth: int = 100) -> list[StoredResponse] | None:
        return None

    async def create_conversation(self, conversation: Conversation, items: Sequence[Item] = ()) -> None:
        return None

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return None

    async def update_conversation(
        self, conversation_id: str, metadata: Mapping[str, str]
    ) -> Conversation | None:
        return None

    async def delete_conversation(self, conversation_id: str) -> bool:
        return False

    async def add_items(self, conversation_id: str, items: Sequence[Item]) -> bool:
        return False

    async def list_items(
        self, conversation_id: str, *, limit: int = 20, order: Order = "desc", after: str | None = None
    ) -> ItemPage | None:
        return None

    async def get_item(self, conversation_id: str, item_id: str) -> Item | None:
        return None

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        return False
