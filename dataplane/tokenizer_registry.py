"""Tokenizers registered at run time (SMG's ``POST /v1/tokenizers``), for the tokenize and detokenize APIs.

Each is loaded in the background from a local directory holding ``tokenizer.json`` (this gateway never
downloads from a hub), optionally with a chat template file of its own, and is found by its name or its
id. Names are unique, and a served model's name is taken by that model's own tokenizer.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dataplane.errors import GatewayError, InvalidRequest, NotFound
from dataplane.tokenizer import ModelTokenizer

log = logging.getLogger(__name__)

Status = Literal["pending", "completed", "failed"]
Loader = Callable[[str, str | None], Awaitable[ModelTokenizer]]


class DuplicateTokenizer(GatewayError):
    code = "tokenizer_already_exists"
    status = 409


class TokenizerNotFound(NotFound):
    code = "tokenizer_not_found"


@dataclass(slots=True)
class RegisteredTokenizer:
    id: str
    name: str
    source: str
    chat_template_path: str | None
    status: Status = "pending"
    message: str = ""
    tokenizer: ModelTokenizer | None = None

    def describe(self) -> dict[str, Any]:
        """As SMG lists a registered tokenizer (``vocab_size`` once it is loaded)."""
        body: dict[str, Any] = {"id": self.id, "name": self.name, "source": self.source}
        if self.tokenizer is not None:
            body["vocab_size"] = self.tokenizer.vocab_size
        return body

    def state(self) -> dict[str, Any]:
        """``GET /v1/tokenizers/{id}/status``."""
        body: dict[str, Any] = {"id": self.id, "status": self.status, "message": self.message}
        if self.tokenizer is not None:
            body["vocab_size"] = self.tokenizer.vocab_size
        return body


class TokenizerRegistry:
    """The registered tokenizers; ``load(directory, chat_template_path)`` loads one (off the loop)."""

    def __init__(self, load: Loader, spawn: Callable[[Coroutine[Any, Any, None]], Any]) -> None:
        self._load = load
        self._spawn = spawn
        self._entries: dict[str, RegisteredTokenizer] = {}

    def add(
        self, name: str, source: str, chat_template_path: str | None, taken: Callable[[str], bool]
    ) -> RegisteredTokenizer:
        """Register ``name`` (``taken(name)``: a served model has that name) and start loading it."""
        if not name.strip():
            raise InvalidRequest("'name' must not be empty", param="name")
        if taken(name) or any(e.name == name for e in self._entries.values()):
            raise DuplicateTokenizer(f"a tokenizer named {name!r} already exists", param="name")
        if not (Path(source) / "tokenizer.json").is_file():
            raise InvalidRequest(
                f"'source' {source!r} is not a local directory holding tokenizer.json "
                "(this gateway does not download from a hub)",
                param="source",
            )
        if chat_template_path is not None and not Path(chat_template_path).is_file():
            raise InvalidRequest(
                f"'chat_template_path' {chat_template_path!r} is not a file", param="chat_template_path"
            )
        entry = RegisteredTokenizer(str(uuid.uuid4()), name, source, chat_template_path)
        entry.message = f"Tokenizer {name!r} registration job submitted. Loading from: {source}"
        self._entries[entry.id] = entry
        self._spawn(self._load_entry(entry))
        return entry

    async def _load_entry(self, entry: RegisteredTokenizer) -> None:
        try:
            tokenizer = await self._load(entry.source, entry.chat_template_path)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken tokenizer.json is the caller's input, not a gateway bug
            entry.status, entry.message = "failed", f"Tokenizer {entry.name!r} failed to load: {exc}"
            log.warning("%s", entry.message)
            return
        if self._entries.get(entry.id) is entry:  # not removed while it loaded
            entry.tokenizer = tokenizer
            entry.status, entry.message = "completed", f"Tokenizer {entry.name!r} is loaded and ready"
            log.info("tokenizer %s registered from %s", entry.name, entry.source)

    def get(self, key: str) -> RegisteredTokenizer:
        """By id or by name; ``TokenizerNotFound`` otherwise."""
        entry = self._entries.get(key) or next((e for e in self._entries.values() if e.name == key), None)
        if entry is None:
            raise TokenizerNotFound(f"Tokenizer {key!r} not found")
        return entry

    def find(self, name: str) -> ModelTokenizer | None:
        """The loaded tokenizer registered as ``name`` (``None`` when none is, or not yet)."""
        entry = next((e for e in self._entries.values() if e.name == name), None)
        return None if entry is None else entry.tokenizer

    def remove(self, key: str) -> RegisteredTokenizer:
        entry = self.get(key)
        del self._entries[entry.id]
        return entry

    def all(self) -> list[RegisteredTokenizer]:
        return list(self._entries.values())

    def loaded(self) -> list[ModelTokenizer]:
        return [e.tokenizer for e in self._entries.values() if e.tokenizer is not None]
