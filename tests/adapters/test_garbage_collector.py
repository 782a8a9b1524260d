"""The garbage collector is tuned once the first worker is ready, not before: the start-up heap frozen,
the young generation collected less often."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import Any, cast

from adapters.app import YOUNG_GENERATION_THRESHOLD, _tune_garbage_collector


async def test_the_collector_is_tuned_when_the_first_worker_is_ready() -> None:
    gateway = SimpleNamespace(first_ready=asyncio.Event())
    gc.unfreeze()
    before = gc.get_threshold()
    task = asyncio.create_task(_tune_garbage_collector(cast(Any, gateway)))
    await asyncio.sleep(0.01)
    assert not task.done() and gc.get_freeze_count() == 0 and gc.get_threshold() == before
    gateway.first_ready.set()
    await asyncio.wait_for(task, 10)
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
