"""The Conversations API through the official client: CRUD, items with cursors, and responses that read
a conversation as their history and append their turn to it."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from refworker.scripts import FIXED_TEXT
from tests.e2e.conftest import MODEL, Deployment, find_request, new_rid


def prompt(d: Deployment, rid: str) -> str:
    _, request = find_request(d, rid)
    text: str = request["tokenized"]["original_text"]
    return text


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


async def texts(client: openai.AsyncOpenAI, conversation_id: str, **kwargs: Any) -> list[str]:
    """Every item's text, page after page (``limit`` 2 makes several pages)."""
    items = client.conversations.items.list(conversation_id, limit=2, **kwargs)
    return [item.content[0].text async for item in items]  # type: ignore[union-attr]


async def test_crud(client: openai.AsyncOpenAI, http: aiohttp.ClientSession, shared: Deployment) -> None:
    created = await client.conversations.create(metadata={"topic": "demo"}, items=[user("hello")])
    assert created.id.startswith("conv_") and created.object == "conversation"
    assert created.metadata == {"topic": "demo"} and created.created_at > 0
    fetched = await client.conversations.retrieve(created.id)
    assert fetched.to_dict() == created.to_dict()
    updated = await client.conversations.update(created.id, metadata={"topic": "other", "x": "y"})
    assert updated.metadata == {"topic": "other", "x": "y"}
    assert (await client.conversations.retrieve(created.id)).metadata == {"topic": "other", "x": "y"}
    deleted = await client.conversations.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "conversation.deleted", True)
    for call in (
        client.conversations.retrieve(created.id),
        client.conversations.delete(created.id),
        client.conversations.update(created.id, metadata={}),
        client.conversations.items.list(created.id),
    ):
        with pytest.raises(openai.NotFoundError):
            await call
    async with http.post(f"{shared.url}/v1/conversations", data=b"") as reply:  # no body: no metadata
        assert reply.status == 200 and (await reply.json())["metadata"] == {}


async def test_items(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create(items=[user(f"item {i}") for i in range(3)])
    added = await client.conversations.items.create(
        conversation.id,
        items=[user("item 3"), {"type": "message", "role": "assistant", "content": "item 4"}],
    )
    assert [i.content[0].text for i in added.data] == ["item 3", "item 4"]  # type: ignore[union-attr]
    assert added.first_id == added.data[0].id and added.last_id == added.data[1].id and not added.has_more
    expected = [f"item {i}" for i in range(5)]
    assert await texts(client, conversation.id, order="asc") == expected
    assert await texts(client, conversation.id) == expected[::-1]  # newest first by default
    page = await client.conversations.items.list(conversation.id, limit=2, order="asc")
    assert page.has_more and page.last_id == page.data[1].id
    rest = await client.conversations.items.list(conversation.id, order="asc", after=page.last_id)
    assert [i.content[0].text for i in rest.data] == expected[2:] and not rest.has_more  # type: ignore[union-attr]

    target = page.data[1]
    item = await client.conversations.items.retrieve(target.id, conversation_id=conversation.id)
    assert item.to_dict() == target.to_dict() and item.type == "message" and item.status == "completed"
    after_delete = await client.conversations.items.delete(target.id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id and after_delete.object == "conversation"
    assert await texts(client, conversation.id, order="asc") == [t for t in expected if t != "item 1"]
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.retrieve(target.id, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.delete(target.id, conversation_id=conversation.id)


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        ("create", {"items": [{"type": "message", "role": "robot", "content": "x"}]}),
        ("create", {"items": [user(str(i)) for i in range(21)]}),
        ("create", {"metadata": {"k": 1}}),
        ("add", {"items": []}),
        ("add", {"items": [{"type": "web_search_call"}]}),
    ],
)
async def test_bad_requests(client: openai.AsyncOpenAI, call: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError):
        if call == "create":
            await client.conversations.create(**kwargs)
        else:
            conversation = await client.conversations.create()
            await client.conversations.items.create(conversation.id, **kwargs)


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_read_and_extend_a_conversation(
    client: openai.AsyncOpenAI, shared: Deployment, stream: bool
) -> None:
    conversation = await client.conversations.create(items=[user("My name is Ada.")])
    rids = [new_rid(), new_rid()]
    first = await _respond(
        client, rids[0], stream, input="[ref script=fixed] What is my name?", conversation=conversation.id
    )
    assert first.conversation.id == conversation.id and first.output_text == FIXED_TEXT
    assert prompt(shared, rids[0]).index("My name is Ada.") < prompt(shared, rids[0]).index(
        "What is my name?"
    )
    items = [i async for i in client.conversations.items.list(conversation.id, order="asc")]
    assert [(i.type, i.role) for i in items] == [  # type: ignore[union-attr]
        ("message", "user"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert items[2].id == first.output[0].id and items[2].content[0].text == FIXED_TEXT  # type: ignore[union-attr]

    second = await _respond(client, rids[1], False, input="And again?", conversation={"id": conversation.id})
    text = prompt(shared, rids[1])
    turns = ["My name is Ada.", "What is my name?", FIXED_TEXT, "And again?"]
    positions = [text.index(t) for t in turns]
    assert positions == sorted(positions), text
    assert second.conversation.id == conversation.id
    assert len([i async for i in client.conversations.items.list(conversation.id)]) == 5


async def _respond(client: openai.AsyncOpenAI, rid: str, stream: bool, **kwargs: Any) -> Any:
    headers = {"x-request-id": rid}
    if not stream:
        return await client.responses.create(model=MODEL, extra_headers=headers, **kwargs)
    async with client.responses.stream(model=MODEL, extra_headers=headers, **kwargs) as events:
        async for _ in events:
            pass
        return await events.get_final_response()


async def test_store_false_still_appends_to_the_conversation(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create()
    response = await client.responses.create(
        model=MODEL, input="hi", conversation=conversation.id, store=False
    )
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    assert await texts(client, conversation.id, order="asc") == ["hi", FIXED_TEXT]


async def test_unknown_conversation(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="conv_nope"):
        await client.responses.create(model=MODEL, input="hi", conversation="conv_nope")
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.create("conv_nope", items=[user("x")])
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.retrieve("msg_x", conversation_id="conv_nope")
