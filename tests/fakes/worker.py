"""An in-memory worker client for pipeline tests: the seam is the client factory, not a mock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

from dataplane.errors import WorkerError
from dataplane.types import Complete, EngineLoad, KvEventBatch, WireRequest, WorkerInfo, WorkerMessage

Script = Callable[[WireRequest], Sequence[WorkerMessage | WorkerError | asyncio.Event]]
KvStream = Sequence[KvEventBatch | WorkerError | asyncio.Event]


@dataclass
class FakeClient:
    """Plays a script per request; an ``Event`` in the script blocks until set, an error is raised.

    ``loads`` is what ``get_loads`` answers (``None``: the worker reports no loads). ``kv_streams`` are
    played one per ``SubscribeKvEvents`` connection, in order (``kv_starts`` records each one's start
    sequence number); with none configured the worker does not implement the RPC, and once they are
    used up a new connection stays silent.
    """

    address: str
    script: Script
    runtime = "sglang"
    info: WorkerInfo
    healthy: bool = True
    loads: EngineLoad | WorkerError | None = None
    kv_streams: list[KvStream] = field(default_factory=list)
    kv_starts: list[int] = field(default_factory=list)
    loads_polled: int = 0
    requests: list[WireRequest] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    closed_early: list[str] = field(default_factory=list)
    closed: bool = False

    async def generate(self, request: WireRequest) -> AsyncGenerator[WorkerMessage, None]:
        self.requests.append(request)
        done = False
        try:
            for step in self.script(request):
                if isinstance(step, asyncio.Event):
                    await step.wait()
                elif isinstance(step, WorkerError):
                    raise step
                else:
                    yield step
            done = True
        finally:
            if not done:
                self.closed_early.append(request.request_id)

    async def abort(self, request_id: str, reason: str) -> bool:
        self.aborted.append(request_id)
        return True

    async def health(self, timeout: float) -> bool:
        return self.healthy

    async def model_info(self, timeout: float) -> WorkerInfo:
        return self.info

    async def get_loads(self, timeout: float) -> EngineLoad | None:
        self.loads_polled += 1
        if isinstance(self.loads, WorkerError):
            raise self.loads
        return self.loads

    async def kv_events(self, start_sequence_number: int) -> AsyncGenerator[KvEventBatch, None]:
        if not self.kv_streams and not self.kv_starts:
            raise WorkerError("SubscribeKvEvents: UNIMPLEMENTED", status=501, grpc_status="UNIMPLEMENTED")
        connection = len(self.kv_starts)
        self.kv_starts.append(start_sequence_number)
        if connection >= len(self.kv_streams):
            await asyncio.Event().wait()  # a silent stream, until the subscriber leaves
        for step in self.kv_streams[connection]:
            if isinstance(step, asyncio.Event):
                await step.wait()
            elif isinstance(step, WorkerError):
                raise step
            else:
                yield step

    def close(self) -> None:
        self.closed = True


def complete(
    ids: list[int], *, prompt: int = 3, reason: str = "stop", index: int = 0, matched: int | str | None = None
) -> Complete:
    return Complete(
        index=index,
        output_ids=ids,
        finish_reason=reason,
        matched_stop=matched,
        prompt_tokens=prompt,
        completion_tokens=len(ids),
        cached_tokens=0,
    )
