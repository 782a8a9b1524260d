"""Walking a plan onto a gRPC ``Generate`` stream; what differs per engine is only the message builder."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, TypeAlias

import grpc

from refworker.engine import Live, Plan

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class MessageBuilder(Protocol):
    """Builds one engine's ``GenerateResponse`` messages of one planned request."""

    @property
    def stream(self) -> bool: ...

    def chunk(self, index: int, start: int, end: int) -> Any:
        """Choice ``index``'s tokens ``[start:end]`` as a stream chunk."""

    def complete(self, index: int, start: int, end: int) -> Any:
        """Choice ``index`` done: ``[start:end]`` is the last delta when streaming, everything otherwise."""

    def aborted(self, index: int, start: int, end: int) -> Any:
        """Choice ``index`` ended by Abort after ``end`` tokens were sent (``start``: as for ``complete``)."""


async def emit(plan: Plan, live: Live, build: MessageBuilder, context: Context) -> None:
    """Walk the plan's steps: sleep until each is due, write it; honour stall, fail_after and Abort."""
    stream = build.stream
    write = context.write
    loop = asyncio.get_running_loop()
    started = loop.time()
    fail_at = -1 if plan.fail_after is None else plan.fail_after
    stall_at = (1 if stream else 0) if plan.stall else -1
    sent_upto = [0] * len(plan.choices)
    finished = [False] * len(plan.choices)
    sent = 0

    async def may_send() -> bool:
        """Before every message: stall, injected failure; False once the request was aborted."""
        nonlocal sent
        if sent == stall_at:
            while not live.aborted:  # in realistic mode the simulator may wake a pause early
                await live.pause(None)
        if live.aborted:
            return False
        if sent == fail_at:
            await context.abort(grpc.StatusCode.INTERNAL, "injected failure")
        sent += 1
        return True

    for due, index, start, end, last in plan.steps:
        if due or live.ticket is not None:
            await live.until(started + due, end)
        if stream and end > start:
            if not await may_send():
                break
            await write(build.chunk(index, start, end))
            sent_upto[index] = end
        if last:
            if not await may_send():
                break
            await write(build.complete(index, start, end))
            sent_upto[index] = end
            finished[index] = True
    if live.aborted:
        for index, upto in enumerate(sent_upto):
            if not finished[index]:
                await write(build.aborted(index, upto if stream else 0, upto))
