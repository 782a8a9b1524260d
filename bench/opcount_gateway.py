"""The gateway, run by ``bench/tracing_opcodes.py``: tracing switched off and on inside one process, and
the Python opcodes its event-loop thread executes counted per request in each state.

Run as ``python bench/opcount_gateway.py <results.json> <seconds> launch <smg launch flags>`` (with
``--enable-trace``).
Tracing is "off" when the tracing middleware passes requests straight through and the gateway has no
tracer (what ``--enable-trace`` leaves out); "on" is the gateway as launched. Once requests flow, a
thread alternates off/on/off/on; in each state it waits a second, then counts opcodes for
``<seconds>`` with ``sys.settrace`` (``f_trace_opcodes``), installed and removed on the event loop's own
thread. Opcode counts do not move with the machine's load the way CPU time does, so two versions of the
code can be compared run against run. The results file has, per state, the requests counted and the
opcodes per request by function.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.trace import Tracer

ROOT = Path(__file__).resolve().parents[1]
# The repository, not bench/ (Python's first entry for this script): bench/parsers.py would shadow the
# gateway's parsers package. Started with .venv's python by bench/tracing_opcodes.py.
sys.path[0] = str(ROOT)

STATES = ("off", "on", "off", "on")
SETTLE_S = 1.0
WARM_REQUESTS = 2000

tracing_on = True
requests = 0
loop: asyncio.AbstractEventLoop | None = None
gateways: list[tuple[Any, Tracer | None]] = []  # each Gateway with the tracer it was built with
traced_middleware: Any = None  # adapters.tracing.tracing_middleware (imported in main, as the gateway)
opcodes: Counter[CodeType] = Counter()


def switchable(tracer: Tracer) -> Middleware:
    traced = traced_middleware(tracer)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        global loop, requests
        loop = loop or asyncio.get_running_loop()
        requests += 1
        if tracing_on:
            response: web.StreamResponse = await traced(request, handler)
            return response
        return await handler(request)

    return middleware


def count(frame: FrameType, event: str, arg: Any) -> Any:
    frame.f_trace_opcodes = True
    if event == "opcode":
        opcodes[frame.f_code] += 1
    return count


def where(code: CodeType) -> str:
    path = code.co_filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
    return f"{path}:{code.co_firstlineno} {code.co_name}"


def measure(out: Path, seconds: float) -> None:
    global tracing_on
    while loop is None or requests < WARM_REQUESTS:
        time.sleep(0.1)
    results = []
    for state in STATES:
        tracing_on = state == "on"
        for gateway, tracer in gateways:
            gateway.tracer = tracer if tracing_on else None
        time.sleep(SETTLE_S)
        opcodes.clear()
        loop.call_soon_threadsafe(sys.settrace, count)
        time.sleep(0.05)
        first = requests
        time.sleep(seconds)
        counted = requests - first
        loop.call_soon_threadsafe(sys.settrace, None)
        time.sleep(0.2)
        per_request = {where(code): n / counted for code, n in opcodes.items()}
        results.append({"state": state, "requests": counted, "opcodes": per_request})
    out.write_text(json.dumps(results))


def main() -> int:
    global traced_middleware
    out, seconds = Path(sys.argv[1]), float(sys.argv[2])
    # By name: mypy, checking bench/*.py with bench/ on its path, would take bench/parsers.py for the
    # gateway's parsers package, as Python would have.
    app = importlib.import_module("adapters.app")
    Gateway = importlib.import_module("dataplane.gateway").Gateway
    traced_middleware = app.tracing_middleware
    setattr(app, "tracing_middleware", switchable)  # noqa: B010
    built = Gateway.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        built(self, *args, **kwargs)
        gateways.append((self, self.tracer))

    setattr(Gateway, "__init__", init)  # noqa: B010 (mypy refuses assigning to a method)
    threading.Thread(target=measure, args=(out, seconds), daemon=True).start()
    smg = importlib.import_module("adapters.cli").main
    return int(smg(sys.argv[3:]))


if __name__ == "__main__":
    sys.exit(main())
