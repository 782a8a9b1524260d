"""One behaviour suite for every history backend (memory, postgres, redis): what ``HistoryStore`` promises."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dataplane.errors import NotFound
from dataplane.history import Conversation, HistoryStore, Item, StoredResponse
from tests.history.conftest import uid


def message(text: str, role: str = "user") -> Item:
    return {
        "id": uid("msg"),
        "type": "message",
        "role": role,
        "content": [{"type": "input_text", "text": text}],
    }


def response(previous: str | None = None, conversation: str | None = None, **fields: Any) -> StoredResponse:
    response_id = uid("resp")
    raw = {
        "id": response_id,
        "object": "response",
        "status": "completed",
        "output": [message("hi", "assistant")],
    }
    return StoredResponse(
        id=response_id,
        model="Qwen/Qwen3-0.6B",
        created_at=1_760_000_000,
        input=[message("hello")],
        raw=raw,
        previous_response_id=previous,
        conversation_id=conversation,
        **fields,
    )


async def new_conversation(store: HistoryStore, items: list[Item] | None = None) -> str:
    conversation_id = uid("conv")
    await store.create_conversation(
        Conversation(conversation_id, 1_760_000_000, {"topic": "tests"}), items or []
    )
    return conversation_id


async def all_ids(store: HistoryStore, conversation_id: str, order: str = "asc") -> list[str]:
    page = await store.list_items(conversation_id, limit=1000, order=order)  # type: ignore[arg-type]
    assert page is not None
    return [item["id"] for item in page.items]


# --- responses ---------------------------------------------------------------------------------------


async def test_response_round_trip(store: HistoryStore) -> None:
    stored = response(safety_identifier="user-1")
    # Unicode, nesting, numbers and nulls come back as they went in, key order included.
    stored.raw["usage"] = {"z_last": 1, "a_first": 2.5, "details": None, "text": "你好 🤖 ünï"}
    await store.put_response(stored)
    got = await store.get_response(stored.id)
    assert got == stored
    assert got is not None and list(got.raw["usage"]) == ["z_last", "a_first", "details", "text"]
    assert await store.get_response(uid("resp")) is None


async def test_delete_response_keeps_its_descendants(store: HistoryStore) -> None:
    first = response()
    second = response(previous=first.id)
    await store.put_response(first)
    await store.put_response(second)
    assert await store.delete_response(first.id) is True
    assert await store.delete_response(first.id) is False
    assert await store.get_response(first.id) is None
    assert await store.get_response(second.id) == second
    # The chain now stops at the missing ancestor.
    assert await store.response_chain(second.id) == [second]


async def test_response_chain_is_oldest_first_and_bounded(store: HistoryStore) -> None:
    chain = [response()]
    for _ in range(4):
        chain.append(response(previous=chain[-1].id))
    for stored in reversed(chain):  # storage order does not matter
        await store.put_response(stored)
    assert await store.response_chain(chain[-1].id) == chain
    assert await store.response_chain(chain[2].id) == chain[:3]
    assert await store.response_chain(chain[-1].id, max_depth=2) == chain[-2:]
    assert await store.response_chain(chain[0].id, max_depth=1) == chain[:1]
    assert await store.response_chain(uid("resp")) is None


async def test_chain_stops_at_an_ancestor_never_stored(store: HistoryStore) -> None:
    orphan = response(previous=uid("resp"))
    await store.put_response(orphan)
    assert await store.response_chain(orphan.id) == [orphan]


# --- conversations -----------------------------------------------------------------------------------


async def test_conversation_crud(store: HistoryStore) -> None:
    conversation_id = await new_conversation(store)
    assert await store.get_conversation(conversation_id) == Conversation(
        conversation_id, 1_760_000_000, {"topic": "tests"}
    )
    updated = await store.update_conversation(conversation_id, {"topic": "new", "owner": "me"})
    assert updated == Conversation(conversation_id, 1_760_000_000, {"topic": "new", "owner": "me"})
    assert await store.get_conversation(conversation_id) == updated
    assert await store.update_conversation(conversation_id, {}) == Conversation(
        conversation_id, 1_760_000_000
    )
    assert await store.update_conversation(uid("conv"), {"a": "b"}) is None
    assert await store.delete_conversation(conversation_id) is True
    assert await store.delete_conversation(conversation_id) is False
    assert await store.get_conversation(conversation_id) is None
    assert await store.list_items(conversation_id) is None


async def test_deleting_a_conversation_deletes_its_items(store: HistoryStore) -> None:
    shared = message("in both")
    first = await new_conversation(store, [message("one"), shared])
    second = await new_conversation(store, [shared])
    assert await store.delete_conversation(first) is True
    assert await store.get_item(first, shared["id"]) is None
    # An item another conversation still holds stays there.
    assert await store.get_item(second, shared["id"]) == shared
    assert await all_ids(store, second) == [shared["id"]]


# --- items -------------------------------------------------------------------------------------------


async def test_items_keep_insertion_order(store: HistoryStore) -> None:
    initial = [message("a"), message("b", "assistant")]
    conversation_id = await new_conversation(store, initial)
    added = [message("c"), {"id": uid("fc"), "type": "function_call", "name": "f", "arguments": "{}"}]
    assert await store.add_items(conversation_id, added) is True
    ids = [item["id"] for item in initial + added]
    assert await all_ids(store, conversation_id, "asc") == ids
    assert await all_ids(store, conversation_id, "desc") == ids[::-1]
    page = await store.list_items(conversation_id)  # default: newest first, 20 at most
    assert page is not None and [i["id"] for i in page.items] == ids[::-1] and not page.has_more
    assert page.items[0] == added[-1]


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_pages_follow_the_after_cursor(store: HistoryStore, order: str) -> None:
    items = [message(str(i)) for i in range(7)]
    conversation_id = await new_conversation(store, items)
    expected = [item["id"] for item in (items if order == "asc" else items[::-1])]
    seen: list[str] = []
    after = None
    pages = []
    while True:
        page = await store.list_items(conversation_id, limit=3, order=order, after=after)  # type: ignore[arg-type]
        assert page is not None
        seen += [item["id"] for item in page.items]
        pages.append((len(page.items), page.has_more))
        if not page.has_more:
            break
        after = seen[-1]
    assert seen == expected
    assert pages == [(3, True), (3, True), (1, False)]
    # A page that ends exactly at the last item has no more after it.
    last = await store.list_items(conversation_id, limit=1, order=order, after=expected[-2])  # type: ignore[arg-type]
    assert last is not None and ([i["id"] for i in last.items], last.has_more) == ([expected[-1]], False)


async def test_unknown_cursor_and_conversation(store: HistoryStore) -> None:
    conversation_id = await new_conversation(store, [message("a")])
    page = await store.list_items(conversation_id, after=uid("msg"))
    assert page is not None and (page.items, page.has_more) == ([], False)
    assert await store.list_items(uid("conv")) is None
    assert await store.get_item(uid("conv"), uid("msg")) is None


async def test_get_and_delete_items(store: HistoryStore) -> None:
    a, b, c = message("a"), message("b"), message("c")
    conversation_id = await new_conversation(store, [a, b, c])
    other = await new_conversation(store)
    assert await store.get_item(conversation_id, b["id"]) == b
    assert await store.get_item(other, b["id"]) is None  # not linked there
    assert await store.get_item(conversation_id, uid("msg")) is None
    assert await store.delete_item(other, b["id"]) is False
    assert await store.delete_item(conversation_id, b["id"]) is True
    assert await store.delete_item(conversation_id, b["id"]) is False
    assert await store.get_item(conversation_id, b["id"]) is None
    assert await all_ids(store, conversation_id) == [a["id"], c["id"]]
    # Appending after a deletion still appends at the end.
    d = message("d")
    await store.add_items(conversation_id, [d])
    assert await all_ids(store, conversation_id) == [a["id"], c["id"], d["id"]]


async def test_adding_an_item_again_updates_it_in_place(store: HistoryStore) -> None:
    a, b = message("a"), message("b")
    conversation_id = await new_conversation(store, [a, b])
    changed = {**a, "status": "completed"}
    await store.add_items(conversation_id, [changed])
    assert await all_ids(store, conversation_id) == [a["id"], b["id"]]
    assert await store.get_item(conversation_id, a["id"]) == changed


async def test_adding_to_an_unknown_conversation_writes_nothing(store: HistoryStore) -> None:
    missing = uid("conv")
    assert await store.add_items(missing, [message("lost")]) is False
    assert await store.get_conversation(missing) is None
    assert await store.list_items(missing) is None


# --- responses in conversations ----------------------------------------------------------------------


async def test_a_response_appends_its_turn_to_its_conversation(store: HistoryStore) -> None:
    earlier = message("earlier")
    conversation_id = await new_conversation(store, [earlier])
    stored = response(conversation=conversation_id)
    turn = [*stored.input, *stored.raw["output"]]
    await store.put_response(stored, turn)
    assert await store.get_response(stored.id) == stored
    assert await all_ids(store, conversation_id) == [earlier["id"], *(item["id"] for item in turn)]


async def test_a_response_to_an_unknown_conversation_is_not_stored(store: HistoryStore) -> None:
    stored = response(conversation=uid("conv"))
    with pytest.raises(NotFound):
        await store.put_response(stored, [*stored.input, *stored.raw["output"]])
    assert await store.get_response(stored.id) is None


async def test_concurrent_turns_stay_whole_and_in_order(store: HistoryStore) -> None:
    conversation_id = await new_conversation(store)
    turns = [[message(f"q{i}"), message(f"a{i}", "assistant")] for i in range(12)]
    responses = [response(conversation=conversation_id) for _ in turns]
    await asyncio.gather(
        *(store.put_response(r, turn) for r, turn in zip(responses[:6], turns[:6], strict=True)),
        *(store.add_items(conversation_id, turn) for turn in turns[6:]),
    )
    ids = await all_ids(store, conversation_id)
    assert sorted(ids) == sorted(item["id"] for turn in turns for item in turn)
    for question, answer in turns:  # each turn's two items are adjacent, question first
        assert ids.index(answer["id"]) == ids.index(question["id"]) + 1
