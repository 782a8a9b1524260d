"""``/v1/conversations``: conversations (create, get, update metadata, delete) and their items (list, add,
get, delete), in OpenAI's shapes, over the history store."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from adapters import params
from adapters.responses.history import HISTORY, conversation_not_found
from adapters.responses.items import list_page, metadata, new_id, normalize_items, page_params
from dataplane.errors import InvalidRequest, NotFound
from dataplane.history import Conversation, HistoryStore

MAX_ITEMS = 20  # items per create or add call, as OpenAI allows


async def create_conversation(request: web.Request) -> web.Response:
    body = await _body(request, {"metadata", "items"})
    conversation = Conversation(new_id("conv_"), int(time.time()), metadata(body.get("metadata")))
    items = _items(body.get("items") or [], required=False)
    await request.app[HISTORY].create_conversation(conversation, items)
    return _json(conversation_json(conversation))


async def get_conversation(request: web.Request) -> web.Response:
    return _json(conversation_json(await _conversation(request)))


async def update_conversation(request: web.Request) -> web.Response:
    body = await _body(request, {"metadata"})
    if "metadata" not in body:
        raise InvalidRequest("'metadata' is required", param="metadata")
    conversation_id = request.match_info["conversation_id"]
    updated = await request.app[HISTORY].update_conversation(conversation_id, metadata(body["metadata"]))
    if updated is None:
        raise conversation_not_found(conversation_id)
    return _json(conversation_json(updated))


async def delete_conversation(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    if not await request.app[HISTORY].delete_conversation(conversation_id):
        raise conversation_not_found(conversation_id)
    return _json({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


async def list_items(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    limit, order, after = page_params(request.query)
    page = await request.app[HISTORY].list_items(conversation_id, limit=limit, order=order, after=after)
    if page is None:
        raise conversation_not_found(conversation_id)
    return _json(list_page(page.items, page.has_more))


async def add_items(request: web.Request) -> web.Response:
    body = await _body(request, {"items"})
    items = _items(body.get("items"), required=True)
    conversation_id = request.match_info["conversation_id"]
    if not await request.app[HISTORY].add_items(conversation_id, items):
        raise conversation_not_found(conversation_id)
    return _json(list_page(items, False))


async def get_item(request: web.Request) -> web.Response:
    conversation_id, item_id = request.match_info["conversation_id"], request.match_info["item_id"]
    store = request.app[HISTORY]
    item = await store.get_item(conversation_id, item_id)
    if item is None:
        raise await _item_not_found(store, conversation_id, item_id)
    return _json(item)


async def delete_item(request: web.Request) -> web.Response:
    """Unlink the item; the answer is the conversation, as OpenAI's."""
    conversation_id, item_id = request.match_info["conversation_id"], request.match_info["item_id"]
    store = request.app[HISTORY]
    if not await store.delete_item(conversation_id, item_id):
        raise await _item_not_found(store, conversation_id, item_id)
    return _json(conversation_json(await _conversation(request)))


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "object": "conversation",
        "created_at": conversation.created_at,
        "metadata": conversation.metadata,
    }


async def _conversation(request: web.Request) -> Conversation:
    conversation_id = request.match_info["conversation_id"]
    conversation = await request.app[HISTORY].get_conversation(conversation_id)
    if conversation is None:
        raise conversation_not_found(conversation_id)
    return conversation


async def _item_not_found(store: HistoryStore, conversation_id: str, item_id: str) -> NotFound:
    if await store.get_conversation(conversation_id) is None:
        return conversation_not_found(conversation_id)
    return NotFound(
        f"Item with id '{item_id}' not found in conversation '{conversation_id}'.", param="item_id"
    )


async def _body(request: web.Request, allowed: set[str]) -> Mapping[str, Any]:
    raw = await request.read()
    body = params.parse_body(raw) if raw.strip() else {}
    params.reject_unknown(body, allowed, {})
    return body


def _items(value: object, *, required: bool) -> list[dict[str, Any]]:
    if required and not value:
        raise InvalidRequest("'items' must be a non-empty list", param="items")
    items = normalize_items(value, "items")
    if len(items) > MAX_ITEMS:
        raise InvalidRequest(f"at most {MAX_ITEMS} items can be added at a time", param="items")
    return items


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
