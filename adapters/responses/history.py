"""The history store in the application, and what a Responses turn reads from it and writes to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from adapters.responses.request import ResponsesRequest
from dataplane.errors import NotFound
from dataplane.history import HistoryStore, Item, StoredResponse

HISTORY: web.AppKey[HistoryStore] = web.AppKey("history")
_PAGE = 100


async def history_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the store is started before the first request and closed after the last."""
    store = app[HISTORY]
    await store.start()
    yield
    await store.close()


async def load_history(store: HistoryStore, request: ResponsesRequest) -> list[Item]:
    """The items before this turn: the ``previous_response_id`` chain's inputs and outputs, oldest first,
    or the conversation's items; 404 when either is unknown."""
    if request.previous_response_id is not None:
        chain = await store.response_chain(request.previous_response_id)
        if chain is None:
            raise NotFound(
                f"Previous response with id '{request.previous_response_id}' not found.",
                param="previous_response_id",
            )
        return [item for stored in chain for item in (*stored.input, *stored.raw.get("output", ()))]
    if request.conversation_id is not None:
        if await store.get_conversation(request.conversation_id) is None:
            raise conversation_not_found(request.conversation_id, param="conversation")
        return await all_items(store, request.conversation_id)
    return []


async def all_items(store: HistoryStore, conversation_id: str) -> list[Item]:
    items: list[Item] = []
    after: str | None = None
    while True:
        page = await store.list_items(conversation_id, limit=_PAGE, order="asc", after=after)
        if page is None:
            raise conversation_not_found(conversation_id, param="conversation")
        items += page.items
        if not page.has_more or not page.items:
            return items
        after = page.items[-1]["id"]


async def persist(store: HistoryStore, request: ResponsesRequest, response: dict[str, Any]) -> None:
    """Store the finished turn (``store``) and append its input and output items to its conversation,
    in one write. A failed turn adds nothing to the conversation."""
    conversation = request.conversation_id
    items = [*request.input, *response["output"]] if response["status"] != "failed" else []
    if request.store:
        stored = StoredResponse(
            id=response["id"],
            model=response["model"],
            created_at=response["created_at"],
            input=request.input,
            raw=response,
            previous_response_id=request.previous_response_id,
            conversation_id=conversation,
            safety_identifier=request.echo["safety_identifier"] or request.echo["user"],
        )
        await store.put_response(stored, items if conversation is not None else ())
    elif conversation is not None and items and not await store.add_items(conversation, items):
        raise conversation_not_found(conversation, param="conversation")


def conversation_not_found(conversation_id: str, *, param: str | None = None) -> NotFound:
    return NotFound(f"Conversation with id '{conversation_id}' not found.", param=param)
