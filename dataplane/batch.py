"""Several prompts in one request (OpenAI completions): one worker request each, merged into one stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import replace

from dataplane.types import Event, Finished, ReasoningDelta, Started, TextDelta, ToolCallDelta, Usage

_END = object()


async def merge_batch(streams: list[AsyncGenerator[Event, None]], n: int) -> AsyncGenerator[Event, None]:
    """Interleave the streams; prompt ``p``'s choice ``i`` becomes index ``p * n + i``; usage is summed.

    Every stream must start before anything is yielded, so a failure of any prompt before its first
    message is still a plain error; a later failure ends the whole response (fail fast).
    """
    async with contextlib.AsyncExitStack() as stack:
        for stream in streams:
            await stack.enter_async_context(contextlib.aclosing(stream))
        starts = [await anext(stream) for stream in streams]
        first = starts[0]
        assert isinstance(first, Started)
        yield first
        queue: asyncio.Queue[tuple[int, Event | BaseException | object]] = asyncio.Queue()

        async def pump(p: int, stream: AsyncGenerator[Event, None]) -> None:
            try:
                async for event in stream:
                    await queue.put((p, event))
                await queue.put((p, _END))
            except Exception as exc:
                await queue.put((p, exc))

        tasks = [asyncio.create_task(pump(p, s)) for p, s in enumerate(streams)]
        stack.push_async_callback(_cancel, tasks)
        usage = Usage(0, 0)
        running = len(streams)
        while running:
            p, item = await queue.get()
            if item is _END:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            elif isinstance(item, Usage):
                usage = Usage(
                    usage.prompt_tokens + item.prompt_tokens,
                    usage.completion_tokens + item.completion_tokens,
                    usage.cached_tokens + item.cached_tokens,
                    usage.reasoning_tokens + item.reasoning_tokens,
                )
            elif isinstance(item, TextDelta | ReasoningDelta | ToolCallDelta | Finished):
                yield replace(item, index=p * n + item.index)
        yield usage


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
