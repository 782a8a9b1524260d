"""Closed-loop chat-completions load generator (asyncio + aiohttp on uvloop), one JSON report on stdout.

``--concurrency`` tasks each send one request after another over keep-alive connections until
``--end-at``. Requests that *finish* inside ``[--start-at, --end-at]`` (wall-clock epoch seconds) are the
measured window; those finishing earlier are warm-up. Every response is checked: HTTP 200, the expected
number of completion tokens in ``usage``, ``finish_reason == "length"``, the expected content length and,
when streaming, a final ``data: [DONE]``. Anything else is an error and is counted and sampled.

Streaming responses are read incrementally; TTFT is the time from sending the request to receiving the
first SSE event whose ``choices[0].delta.content`` is non-empty. Every event is parsed with orjson, the
same work for every gateway (a gateway that sends more events costs its clients more, which is fair).

Used by ``bench/compare.py``; runnable on its own::

    python bench/loadgen.py --url http://127.0.0.1:8080 --model M --concurrency 8 \\
        --start-at $(($(date +%s)+3)) --end-at $(($(date +%s)+13)) --stream --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import uvloop

MAX_ERROR_SAMPLES = 8


@dataclass(slots=True)
class Window:
    """Results of the requests that finished inside the measured window."""

    ok: int = 0
    errors: int = 0
    completion_tokens: int = 0
    sse_events: int = 0
    reads: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ttfts_ms: list[float] = field(default_factory=list)


@dataclass(slots=True)
class State:
    warmup_ok: int = 0
    warmup_errors: int = 0
    connections: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    window: Window = field(default_factory=Window)

    def error(self, kind: str, detail: str) -> None:
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{kind}: {detail[:300]}")


class BadResponse(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class Bodies:
    """Request bodies: one fixed body, or (``--unique-prompts``) a counter spliced into the user turn."""

    def __init__(self, args: argparse.Namespace) -> None:
        import workload  # a sibling module; imported late so --help stays cheap

        body = orjson.dumps(workload.chat_body(args.model, args.max_tokens, args.stream, args.unique_prompts))
        self.fixed = None if args.unique_prompts else body
        self.prefix, self.suffix = workload.split_at_counter(body) if args.unique_prompts else (b"", b"")
        self.count = 0

    def next(self) -> bytes:
        if self.fixed is not None:
            return self.fixed
        self.count += 1
        return b"%s%06d%s" % (self.prefix, self.count % 1_000_000, self.suffix)


def check_final(args: argparse.Namespace, finish: Any, usage: Any, chars: int) -> int:
    """Validate what every response must end with; return its completion-token count."""
    if finish != "length":
        raise BadResponse("finish_reason", f"finish_reason={finish!r}, expected 'length'")
    if not isinstance(usage, dict) or usage.get("completion_tokens") != args.max_tokens:
        raise BadResponse("token_count", f"usage={usage!r}, expected completion_tokens={args.max_tokens}")
    if args.expect_chars and chars != args.expect_chars:
        raise BadResponse("content_length", f"content has {chars} chars, expected {args.expect_chars}")
    return int(args.max_tokens)


async def read_plain(args: argparse.Namespace, resp: aiohttp.ClientResponse) -> tuple[int, int, int, float]:
    data = orjson.loads(await resp.read())
    choice = data["choices"][0]
    content = choice["message"].get("content") or ""
    return check_final(args, choice.get("finish_reason"), data.get("usage"), len(content)), 0, 1, 0.0


async def read_sse(
    args: argparse.Namespace, resp: aiohttp.ClientResponse, sent: float
) -> tuple[int, int, int, float]:
    """Consume an SSE body; return (completion tokens, events, socket reads, TTFT seconds)."""
    buffer = b""
    ttft = 0.0
    events = chars = reads = 0
    finish: Any = None
    usage: Any = None
    done = False
    async for chunk in resp.content.iter_any():
        now = time.perf_counter()
        reads += 1
        buffer += chunk
        *blocks, buffer = buffer.split(b"\n\n")
        for block in blocks:
            for line in block.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    continue
                events += 1
                data = orjson.loads(payload)
                if "error" in data:
                    raise BadResponse("sse_error", payload.decode(errors="replace"))
                if data.get("usage"):
                    usage = data["usage"]
                for choice in data.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        chars += len(text)
                        if not ttft:
                            ttft = now - sent
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
    if not done:
        raise BadResponse("no_done", "stream ended without data: [DONE]")
    return check_final(args, finish, usage, chars), events, reads, ttft


async def one_request(
    args: argparse.Namespace, session: aiohttp.ClientSession, url: str, bodies: Bodies, state: State
) -> None:
    body = bodies.next()
    sent = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
            if resp.status != 200:
                raise BadResponse(f"http_{resp.status}", (await resp.read()).decode(errors="replace"))
            if args.stream:
                tokens, events, reads, ttft = await read_sse(args, resp, sent)
            else:
                tokens, events, reads, ttft = await read_plain(args, resp)
    except BadResponse as exc:
        ok, kind, detail = False, exc.kind, str(exc)
    except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError) as exc:
        ok, kind, detail = False, type(exc).__name__, repr(exc)
    else:
        ok, kind, detail = True, "", ""
    finished = time.time()
    if not args.start_at <= finished <= args.end_at:
        if finished < args.start_at:
            state.warmup_ok += ok
            state.warmup_errors += not ok
        if not ok:
            state.error(kind, detail)
        return
    window = state.window
    if not ok:
        window.errors += 1
        state.error(kind, detail)
        return
    window.ok += 1
    window.completion_tokens += tokens
    window.sse_events += events
    window.reads += reads
    window.latencies_ms.append((time.perf_counter() - sent) * 1000)
    if args.stream:
        window.ttfts_ms.append(ttft * 1000)


async def client_task(
    args: argparse.Namespace, session: aiohttp.ClientSession, url: str, bodies: Bodies, state: State
) -> None:
    for _ in range(args.max_requests):
        if time.time() >= args.end_at:
            return
        await one_request(args, session, url, bodies, state)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    state = State()
    trace = aiohttp.TraceConfig()

    async def on_connection(*_: Any) -> None:
        state.connections += 1

    trace.on_connection_create_end.append(on_connection)
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False, keepalive_timeout=300)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    url = args.url.rstrip("/") + "/v1/chat/completions"
    bodies = Bodies(args)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trace_configs=[trace], auto_decompress=False
    ) as session:
        tasks = [
            asyncio.create_task(client_task(args, session, url, bodies, state))
            for _ in range(args.concurrency)
        ]
        hard_stop = args.end_at + args.timeout + 5 - time.time()
        _, pending = await asyncio.wait(tasks, timeout=max(hard_stop, 1))
        for task in pending:
            task.cancel()
        if pending:
            state.error("hard_stop", f"{len(pending)} clients still busy {args.timeout}s after the window")
            await asyncio.gather(*pending, return_exceptions=True)
    window = state.window
    return {
        "ok": window.ok,
        "errors": window.errors,
        "completion_tokens": window.completion_tokens,
        "sse_events": window.sse_events,
        "reads": window.reads,
        "latencies_ms": window.latencies_ms,
        "ttfts_ms": window.ttfts_ms,
        "warmup_ok": state.warmup_ok,
        "warmup_errors": state.warmup_errors,
        "connections": state.connections,
        "error_kinds": state.error_kinds,
        "error_samples": state.error_samples,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="gateway base URL")
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--start-at", type=float, required=True, help="epoch seconds: window start")
    parser.add_argument("--end-at", type=float, required=True, help="epoch seconds: window end")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument(
        "--unique-prompts", action="store_true", help="a per-request counter in the user turn"
    )
    parser.add_argument("--expect-chars", type=int, default=0, help="expected content length (0: unchecked)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="per client task")
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    report = uvloop.run(run(args))
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
