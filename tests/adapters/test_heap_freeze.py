"""The start-up heap is frozen once the first worker is ready, not before."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import Any, cast

from adapters.app import _freeze_start_up_heap


async def test_heap_is_frozen_when_the_first_worker_is_ready() -> None:
    gateway = SimpleNamespace(first_ready=asyncio.Event())
    gc.unfreeze()
    task = asyncio.create_task(_freeze_start_up_heap(cast(Any, gateway)))
    await asyncio.sleep(0.01)
    assert not task.done() and gc.get_freeze_count() == 0
    gateway.first_ready.set()
    await asyncio.wait_for(task, 10)
    try:
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
