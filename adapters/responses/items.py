"""Responses and Conversations items: ids, validation into their stored shape, and chat messages.

An input item (a message with string or part content, a ``function_call``, a ``function_call_output``, a
``reasoning`` item) is normalized into the shape OpenAI lists it in — every item with an ``id`` and a
``status``, message content as typed parts — so stored history reads back the same from every backend.
A conversation's history (stored items and output items alike) becomes chat messages for the template.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from dataplane.errors import InvalidRequest, UnsupportedParameter
from dataplane.history import Item, Order

_MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TEXT_PARTS = frozenset({"input_text", "output_text"})
_ID_PREFIXES = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}
MAX_METADATA_KEYS = 16


def new_id(prefix: str) -> str:
    """An OpenAI-style id: ``resp_``, ``conv_``, ``msg_``, ``fc_``, ``call_``… and 48 hex digits."""
    return prefix + secrets.token_hex(24)


def normalize_items(items: object, param: str) -> list[Item]:
    """Validate a list of input items; each gets an id (kept when the client sent one) and a status."""
    if not isinstance(items, list):
        raise InvalidRequest(f"'{param}' must be a list of items", param=param)
    return [normalize_item(item, f"{param}[{i}]") for i, item in enumerate(items)]


def normalize_item(item: object, where: str) -> Item:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    kind = item.get("type", "message" if "role" in item else None)
    item_id = item.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id):
        raise InvalidRequest(f"{where}.id must be a non-empty string", param=f"{where}.id")
    if kind == "message":
        out = _message(item, where)
    elif kind == "function_call":
        out = {
            "type": kind,
            "call_id": _string(item, "call_id", where),
            "name": _string(item, "name", where),
            "arguments": _string(item, "arguments", where, empty_ok=True),
        }
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _parts_text(output, f"{where}.output", _TEXT_PARTS)
        out = {"type": kind, "call_id": _string(item, "call_id", where), "output": text}
    elif kind == "reasoning":
        out = _reasoning(item, where)
    elif kind == "item_reference":
        raise UnsupportedParameter(
            f"{where}: item references are not supported; send the item, or use previous_response_id",
            param=where,
        )
    elif isinstance(kind, str):
        raise UnsupportedParameter(f"{where}: item type {kind!r} is not supported", param=f"{where}.type")
    else:
        raise InvalidRequest(f"{where} needs a 'type' (or a 'role' for a message)", param=where)
    status = item.get("status") or "completed"
    if status not in ("in_progress", "completed", "incomplete"):
        raise InvalidRequest(f"{where}.status {status!r} is not a valid item status", param=f"{where}.status")
    return {"id": item_id or new_id(_ID_PREFIXES[kind]), **out, "status": status}


def _message(item: dict[str, Any], where: str) -> Item:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        raise InvalidRequest(
            f"{where}.role must be one of {', '.join(sorted(_MESSAGE_ROLES))}", param=f"{where}.role"
        )
    content = item.get("content")
    part_type = "output_text" if role == "assistant" else "input_text"
    parts: list[dict[str, Any]]
    if isinstance(content, str):
        parts = [{"type": part_type, "text": content}]
    else:
        _parts_text(content, f"{where}.content", _TEXT_PARTS | {"refusal"})
        assert isinstance(content, list)
        parts = [_text_part(part) for part in content]
    if role == "assistant":
        parts = [p if p["type"] != "output_text" else {"annotations": [], **p} for p in parts]
    return {"type": "message", "role": role, "content": parts}


def _text_part(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] == "refusal":
        return {"type": "refusal", "refusal": part["refusal"]}
    out = {"type": part["type"], "text": part["text"]}
    if part["type"] == "output_text":
        out["annotations"] = part.get("annotations") or []
    return out


def _reasoning(item: dict[str, Any], where: str) -> Item:
    if item.get("encrypted_content") is not None:
        raise UnsupportedParameter(
            f"{where}: encrypted reasoning is not supported", param=f"{where}.encrypted_content"
        )
    summary = item.get("summary") or []
    content = item.get("content") or []
    _parts_text(summary, f"{where}.summary", frozenset({"summary_text"}))
    _parts_text(content, f"{where}.content", frozenset({"reasoning_text"}))
    return {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": p["text"]} for p in summary],
        "content": [{"type": "reasoning_text", "text": p["text"]} for p in content],
    }


def _string(item: dict[str, Any], key: str, where: str, *, empty_ok: bool = False) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not (value or empty_ok):
        raise InvalidRequest(f"{where}.{key} must be a non-empty string", param=f"{where}.{key}")
    return value


def _parts_text(parts: object, where: str, allowed: frozenset[str]) -> str:
    """The text of a list of content parts, each one of the ``allowed`` types; 400 otherwise."""
    if not isinstance(parts, list):
        raise InvalidRequest(f"{where} must be a string or a list of content parts", param=where)
    texts = []
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            if isinstance(kind, str) and kind.startswith("input_"):
                raise UnsupportedParameter(
                    f"{where}[{i}]: content type {kind!r} is not supported (text only)", param=where
                )
            raise InvalidRequest(
                f"{where}[{i}] must be a part of type {' or '.join(sorted(allowed))}", param=where
            )
        key = "refusal" if kind == "refusal" else "text"
        if not isinstance(part.get(key), str):
            raise InvalidRequest(f"{where}[{i}].{key} must be a string", param=where)
        texts.append(part[key])
    return "".join(texts)


def item_text(item: Item) -> str:
    """The text of a normalized message or reasoning item."""
    parts = item.get("content") or item.get("summary") or []
    return "".join(p.get("text") or p.get("refusal") or "" for p in parts)


def to_messages(items: Sequence[Item]) -> list[dict[str, Any]]:
    """Normalized items, oldest first, as chat messages: consecutive assistant output (text, function
    calls) is one assistant message, a reasoning item becomes the next assistant message's
    ``reasoning_content``, a function call's output a ``tool`` message."""
    messages: list[dict[str, Any]] = []
    reasoning: str | None = None

    def assistant(*, merge: bool) -> dict[str, Any]:
        nonlocal reasoning
        if merge and messages and messages[-1]["role"] == "assistant":
            message = messages[-1]
        else:
            message = {"role": "assistant", "content": ""}
            messages.append(message)
        if reasoning is not None:
            message["reasoning_content"] = reasoning
            reasoning = None
        return message

    for item in items:
        kind = item["type"]
        if kind == "reasoning":
            reasoning = item_text(item)
        elif kind == "message" and item["role"] == "assistant":
            assistant(merge=False)["content"] = item_text(item)
        elif kind == "message":
            messages.append({"role": item["role"], "content": item_text(item)})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function"}
            call["function"] = {"name": item["name"], "arguments": item["arguments"]}
            assistant(merge=True).setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def metadata(value: object, param: str = "metadata") -> dict[str, str]:
    """OpenAI's metadata: at most 16 string pairs, keys up to 64 characters, values up to 512."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise InvalidRequest(f"'{param}' must be an object of at most 16 key-value pairs", param=param)
    for key, text in value.items():
        if not isinstance(text, str) or len(key) > 64 or len(text) > 512:
            raise InvalidRequest(
                f"'{param}': keys are strings of up to 64 characters, values strings of up to 512",
                param=param,
            )
    return dict(value)


def list_page(items: Sequence[Item], has_more: bool) -> dict[str, Any]:
    """A list object with cursors, as ``input_items`` and conversation items are listed."""
    return {
        "object": "list",
        "data": list(items),
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def page_params(query: Mapping[str, str]) -> tuple[int, Order, str | None]:
    """``limit`` (1–100, default 20), ``order`` (``asc``/``desc``, default ``desc``) and ``after`` of a
    list request's query string."""
    for key in query:
        if key not in ("limit", "order", "after"):
            raise UnsupportedParameter(f"query parameter {key!r} is not supported", param=key)
    raw_limit = query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise InvalidRequest("'limit' must be an integer between 1 and 100", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'", param="order")
    return int(raw_limit), "asc" if order == "asc" else "desc", query.get("after") or None
