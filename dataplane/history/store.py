"""What a history backend stores and the one interface every backend implements.

Records are plain JSON-able dicts in OpenAI's shapes, so a backend never interprets them: a stored response
keeps the Response object the client saw (``raw``) and the input items it was created from (``input``);
a conversation item is the item object itself (``{"id": "msg_…", "type": "message", …}``).

Every method may raise ``dataplane.errors.HistoryUnavailable`` when the backend cannot be reached; no
method leaves a half-written state behind (a response and the items it appends to its conversation are
written in one transaction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Item = dict[str, Any]  # one conversation/input item, always with "id" and "type"
Order = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    model: str
    created_at: int  # unix seconds
    input: list[Item]  # the input items of this turn only (not the history before it), each with an id
    raw: dict[str, Any]  # the Response object as returned to the client (output, usage, status, …)
    previous_response_id: str | None = None
    conversation_id: str | None = None
    safety_identifier: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    created_at: int  # unix seconds
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ItemPage:
    items: list[Item]
    has_more: bool


class HistoryStore(Protocol):
    """Responses, conversations and conversation items. ``memory``, ``none``, ``postgres``, ``redis``."""

    name: str

    async def start(self) -> None:
        """Connect and apply migrations. Must not raise when the server is down: log, and let each later
        operation raise ``HistoryUnavailable`` until it is back (migrations run on the first connect)."""

    async def close(self) -> None: ...

    # --- responses -----------------------------------------------------------------------------------
    async def put_response(self, response: StoredResponse, conversation_items: Sequence[Item] = ()) -> None:
        """Store ``response``; when it has a ``conversation_id``, append ``conversation_items`` (this turn's
        input and output items, in order) to that conversation in the same transaction. Raises
        ``NotFound`` if the conversation does not exist (and then nothing is written)."""

    async def get_response(self, response_id: str) -> StoredResponse | None: ...

    async def delete_response(self, response_id: str) -> bool:
        """True when it existed. Responses that point at it through ``previous_response_id`` stay."""

    async def response_chain(self, response_id: str, max_depth: int = 100) -> list[StoredResponse] | None:
        """``response_id`` and its ancestors through ``previous_response_id``, oldest first; ``None`` when
        ``response_id`` itself is unknown. The walk stops at a missing ancestor or after ``max_depth``."""

    # --- conversations -------------------------------------------------------------------------------
    async def create_conversation(self, conversation: Conversation, items: Sequence[Item] = ()) -> None: ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    async def update_conversation(
        self, conversation_id: str, metadata: Mapping[str, str]
    ) -> Conversation | None:
        """Replace the metadata; ``None`` when unknown."""

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete the conversation and its item links (items no other conversation links are deleted)."""

    # --- conversation items --------------------------------------------------------------------------
    async def add_items(self, conversation_id: str, items: Sequence[Item]) -> bool:
        """Append ``items`` in order; False (nothing written) when the conversation is unknown."""

    async def list_items(
        self, conversation_id: str, *, limit: int = 20, order: Order = "desc", after: str | None = None
    ) -> ItemPage | None:
        """Items in insertion order (``asc``) or reversed (``desc``), starting after the item ``after``;
        ``None`` when the conversation is unknown."""

    async def get_item(self, conversation_id: str, item_id: str) -> Item | None: ...

    async def delete_item(self, conversation_id: str, item_id: str) -> bool: ...
