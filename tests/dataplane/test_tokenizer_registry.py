"""The run-time tokenizer registry: validation at once, loading in the background, lookup, removal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dataplane.errors import InvalidRequest
from dataplane.tokenizer import ModelTokenizer
from dataplane.tokenizer_registry import DuplicateTokenizer, TokenizerNotFound, TokenizerRegistry


class Loads:
    """Loads for real, off the loop, each held until released (to see the pending state)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls: list[tuple[str, str | None]] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def load(self, directory: str, template: str | None) -> ModelTokenizer:
        self.calls.append((directory, template))
        await self.release.wait()
        return await asyncio.to_thread(ModelTokenizer.from_dir, directory, chat_template=template)

    def spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))


def nothing_taken(name: str) -> bool:
    return False


async def test_a_tokenizer_is_pending_then_completed_and_found_by_name_or_id(llama3_dir: Path) -> None:
    loads = Loads()
    registry = TokenizerRegistry(loads.load, loads.spawn)
    entry = registry.add("llama", str(llama3_dir), None, nothing_taken)
    assert entry.state()["status"] == "pending" and registry.find("llama") is None
    loads.release.set()
    await asyncio.gather(*loads.tasks)
    state = entry.state()
    assert state["status"] == "completed" and state["vocab_size"] > 128000
    assert registry.get("llama") is registry.get(entry.id) is entry
    assert registry.find("llama") is entry.tokenizer and registry.loaded() == [entry.tokenizer]
    assert loads.calls == [(str(llama3_dir), None)]
    assert registry.remove("llama") is entry and registry.all() == []
    with pytest.raises(TokenizerNotFound):
        registry.get(entry.id)


async def test_a_tokenizer_removed_while_loading_stays_removed(llama3_dir: Path) -> None:
    loads = Loads()
    registry = TokenizerRegistry(loads.load, loads.spawn)
    entry = registry.add("llama", str(llama3_dir), None, nothing_taken)
    registry.remove(entry.id)
    loads.release.set()
    await asyncio.gather(*loads.tasks)
    assert registry.find("llama") is None and entry.tokenizer is None


async def test_a_load_failure_is_the_jobs_status(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{")
    loads = Loads()
    loads.release.set()
    registry = TokenizerRegistry(loads.load, loads.spawn)
    entry = registry.add("broken", str(tmp_path), None, nothing_taken)
    await asyncio.gather(*loads.tasks)
    assert entry.status == "failed" and "failed to load" in entry.message
    assert registry.find("broken") is None


async def test_names_and_sources_are_checked_before_anything_loads(llama3_dir: Path, tmp_path: Path) -> None:
    loads = Loads()
    registry = TokenizerRegistry(loads.load, loads.spawn)
    registry.add("llama", str(llama3_dir), None, nothing_taken)
    with pytest.raises(DuplicateTokenizer):
        registry.add("llama", str(llama3_dir), None, nothing_taken)
    with pytest.raises(DuplicateTokenizer):
        registry.add("served-model", str(llama3_dir), None, lambda name: name == "served-model")
    with pytest.raises(InvalidRequest, match="does not download"):
        registry.add("hub", "meta-llama/Llama-3.2-1B", None, nothing_taken)
    with pytest.raises(InvalidRequest) as caught:
        registry.add("t", str(llama3_dir), str(tmp_path / "missing.jinja"), nothing_taken)
    assert caught.value.param == "chat_template_path"
    with pytest.raises(InvalidRequest):
        registry.add(" ", str(llama3_dir), None, nothing_taken)
    assert [e.name for e in registry.all()] == ["llama"] and len(loads.tasks) == 1
    for task in loads.tasks:
        task.cancel()
