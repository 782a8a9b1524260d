"""The ``memory`` history backend: in-process dicts, lost on restart (SMG's default).

Every method runs without awaiting, so each one is atomic on the event loop. Records are deep-copied in
and out, so a caller mutating a dict it passed or got back never changes what is stored (as with the
database backends, which serialize).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace

from dataplane.errors import NotFound
from dataplane.history.store import Conversation, Item, ItemPage, Order, StoredResponse


class MemoryHistory:
    """Responses by id; conversations with the ordered ids of the items they link."""

    name = "memory"

    def __init__(self) -> None:
        self._responses: dict[str, StoredResponse] = {}
        self._conversations: dict[str, Conversation] = {}
        self._links: dict[str, list[str]] = {}  # conversation id -> item ids in insertion order
        self._items: dict[str, Item] = {}
        self._link_counts: dict[str, int] = {}  # item id -> how many conversations link it

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # --- responses -----------------------------------------------------------------------------------
    async def put_response(self, response: StoredResponse, conversation_items: Sequence[Item] = ()) -> None:
        if response.conversation_id is not None and response.conversation_id not in self._conversations:
            raise NotFound(f"conversation {response.conversation_id!r} not found", param="conversation")
        self._responses[response.id] = _copy_response(response)
        if response.conversation_id is not None:
            self._link(response.conversation_id, conversation_items)

    async def get_response(self, response_id: str) -> StoredResponse | None:
        stored = self._responses.get(response_id)
        return None if stored is None else _copy_response(stored)

    async def delete_response(self, response_id: str) -> bool:
        return self._responses.pop(response_id, None) is not None

    async def response_chain(self, response_id: str, max_depth: int = 100) -> list[StoredResponse] | None:
        if response_id not in self._responses:
            return None
        chain: list[StoredResponse] = []
        current: str | None = response_id
        while current is not None and len(chain) < max_depth:
            stored = self._responses.get(current)
            if stored is None:
                break
            chain.append(_copy_response(stored))
            current = stored.previous_response_id
        chain.reverse()
        return chain

    # --- conversations -------------------------------------------------------------------------------
    async def create_conversation(self, conversation: Conversation, items: Sequence[Item] = ()) -> None:
        self._conversations[conversation.id] = replace(conversation, metadata=dict(conversation.metadata))
        self._links.setdefault(conversation.id, [])
        self._link(conversation.id, items)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        found = self._conversations.get(conversation_id)
        return None if found is None else replace(found, metadata=dict(found.metadata))

    async def update_conversation(
        self, conversation_id: str, metadata: Mapping[str, str]
    ) -> Conversation | None:
        found = self._conversations.get(conversation_id)
        if found is None:
            return None
        updated = replace(found, metadata=dict(metadata))
        self._conversations[conversation_id] = updated
        return replace(updated, metadata=dict(updated.metadata))

    async def delete_conversation(self, conversation_id: str) -> bool:
        if self._conversations.pop(conversation_id, None) is None:
            return False
        for item_id in self._links.pop(conversation_id, []):
            self._unlink(item_id)
        return True

    # --- conversation items --------------------------------------------------------------------------
    async def add_items(self, conversation_id: str, items: Sequence[Item]) -> bool:
        if conversation_id not in self._conversations:
            return False
        self._link(conversation_id, items)
        return True

    async def list_items(
        self, conversation_id: str, *, limit: int = 20, order: Order = "desc", after: str | None = None
    ) -> ItemPage | None:
        if conversation_id not in self._conversations:
            return None
        ids = self._links[conversation_id]
        ordered = ids if order == "asc" else ids[::-1]
        start = 0
        if after is not None:
            # An unknown cursor matches nothing, as `WHERE position > (subquery)` does in SQL.
            start = ordered.index(after) + 1 if after in ordered else len(ordered)
        page = ordered[start : start + limit]
        return ItemPage(
            items=[copy.deepcopy(self._items[i]) for i in page], has_more=start + limit < len(ordered)
        )

    async def get_item(self, conversation_id: str, item_id: str) -> Item | None:
        if item_id not in self._links.get(conversation_id, ()):
            return None
        return copy.deepcopy(self._items[item_id])

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        ids = self._links.get(conversation_id)
        if ids is None or item_id not in ids:
            return False
        ids.remove(item_id)
        self._unlink(item_id)
        return True

    def _link(self, conversation_id: str, items: Sequence[Item]) -> None:
        ids = self._links[conversation_id]
        for item in items:
            item_id = item["id"]
            self._items[item_id] = copy.deepcopy(item)
            if item_id not in ids:
                ids.append(item_id)
                self._link_counts[item_id] = self._link_counts.get(item_id, 0) + 1

    def _unlink(self, item_id: str) -> None:
        left = self._link_counts.get(item_id, 0) - 1
        if left > 0:
            self._link_counts[item_id] = left
        else:
            self._link_counts.pop(item_id, None)
            self._items.pop(item_id, None)


def _copy_response(response: StoredResponse) -> StoredResponse:
    return replace(response, input=copy.deepcopy(response.input), raw=copy.deepcopy(response.raw))
