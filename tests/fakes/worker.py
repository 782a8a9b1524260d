"""An in-memory worker client for pipeline tests: the seam is the client factory, not a mock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

from dataplane.errors import WorkerError
from dataplane.types import Complete, WireRequest, WorkerInfo, WorkerMessage

Script = Callable[[WireRequest], Sequence[WorkerMessage | WorkerError | asyncio.Event]]


@dataclass
class FakeClient:
    """Plays a script per request; an ``Event`` in the script blocks until set, an error is raised."""

    address: str
    script: Script
    info: WorkerInfo
    healthy: bool = True
    requests: list[WireRequest] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    closed_early: list[str] = field(default_factory=list)

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

    def close(self) -> None:
        pass


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
