"""Load generators of bench/tokenize.py, one process each (so their CPU is counted apart from the gateway).

    tokenload.py list  --url URL --requests FILE --concurrency C           HTTP, each request once, in order
    tokenload.py list  --grpc HOST:PORT --requests FILE --concurrency C    the same over smg.gateway.v1
    tokenload.py rate  --grpc HOST:PORT --text T --unique --concurrency C --start-at S --end-at E
    tokenload.py probe --url URL --model M --big-chars N --start-at S --end-at E [--no-big]

``list`` reads JSON lines ``{"model", "prompt", "count"}`` and checks every answer's count; ``rate``
counts answers completed inside the window; ``probe`` times small tokenize requests, one at a time on
their own connection, while another connection keeps a ~100k-token tokenize in flight. Each prints one
JSON line of results last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grpclib.client import Channel  # noqa: E402
from grpclib.const import Cardinality  # noqa: E402

from proto._gen.smg.gateway.v1 import tokenizer_pb2 as pb  # noqa: E402

TAG = "Request 000000. "  # rate --unique: replaced by a per-request counter


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("list", "rate", "probe"))
    parser.add_argument("--url", help="HTTP base URL")
    parser.add_argument("--grpc", help="HOST:PORT of the gateway's gRPC API")
    parser.add_argument("--requests", type=Path, help="list: JSON lines {model, prompt, count}")
    parser.add_argument("--model", default="")
    parser.add_argument(
        "--text", default="", help="rate: the prompt; with --unique, 'Request NNNNNN. ' first"
    )
    parser.add_argument("--unique", action="store_true")
    parser.add_argument("--count", type=int, default=-1, help="rate: expected count (-1: unchecked)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--channels", type=int, default=4, help="rate/list over gRPC: HTTP/2 connections")
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--end-at", type=float, default=0.0)
    parser.add_argument("--big-chars", type=int, default=450_000)
    parser.add_argument("--no-big", action="store_true", help="probe: the baseline, nothing big in flight")
    return parser.parse_args()


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.samples: list[str] = []
        self.tokens = 0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 3:
            self.samples.append(what[:300])


async def http_count(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as reply:
        raw = await reply.read()
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {raw[:200]!r}")
        count: int = orjson.loads(raw)["count"]
        return count


def grpc_channels(address: str, channels: int) -> list[Channel]:
    host, _, port = address.rpartition(":")
    return [Channel(host, int(port)) for _ in range(channels)]


async def grpc_count(channel: Channel, model: str, text: str) -> int:
    """One ``Tokenize`` call, on protobuf's C message classes (a Python codec would cost the client more
    than the gateway spends)."""
    async with channel.request(
        "/smg.gateway.v1.Tokenizer/Tokenize", Cardinality.UNARY_UNARY, pb.TokenizeRequest, pb.TokenizeResponse
    ) as stream:
        await stream.send_message(pb.TokenizeRequest(model=model, text=text), end=True)
        reply = await stream.recv_message()
        await stream.recv_trailing_metadata()
    assert reply is not None
    return int(reply.count)


async def run_list(args: argparse.Namespace) -> dict[str, Any]:
    items = [json.loads(line) for line in args.requests.read_text().splitlines() if line]
    tally = Tally()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    channels = grpc_channels(args.grpc, args.channels) if args.grpc else []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def worker(i: int) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            try:
                if channels:
                    count = await grpc_count(channels[i % len(channels)], item["model"], item["prompt"])
                else:
                    body = orjson.dumps({"model": item["model"], "prompt": item["prompt"]})
                    count = await http_count(session, f"{args.url}/v1/tokenize", body)
            except Exception as exc:
                tally.error(repr(exc))
                continue
            if count == item["count"]:
                tally.ok += 1
                tally.tokens += count
            else:
                tally.error(f"count {count}, expected {item['count']}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    await session.close()
    for channel in channels:
        channel.close()
    return {"requests": len(items), "ok": tally.ok, "errors": tally.errors, "error_samples": tally.samples,
            "seconds": elapsed, "tokens": tally.tokens}  # fmt: skip


async def run_rate(args: argparse.Namespace) -> dict[str, Any]:
    """Closed loop over gRPC: completions inside [start-at, end-at)."""
    channels = grpc_channels(args.grpc, args.channels)
    tally = Tally()
    counter = 0
    warm = 0

    async def worker(i: int) -> None:
        nonlocal counter, warm
        channel = channels[i % len(channels)]
        while time.time() < args.end_at:
            counter += 1
            text = (
                args.text.replace(TAG, f"Request {counter % 1_000_000:06d}. ", 1)
                if args.unique
                else args.text
            )
            try:
                count = await grpc_count(channel, args.model, text)
            except Exception as exc:
                tally.error(repr(exc))
                continue
            now = time.time()
            if args.count >= 0 and count != args.count:
                tally.error(f"count {count}, expected {args.count}")
            elif args.start_at <= now < args.end_at:
                tally.ok += 1
            elif now < args.start_at:
                warm += 1

    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    for channel in channels:
        channel.close()
    return {"ok": tally.ok, "errors": tally.errors, "error_samples": tally.samples, "warmup_ok": warm,
            "seconds": args.end_at - args.start_at}  # fmt: skip


async def run_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Latency of small requests while big ones are tokenized (unless --no-big)."""
    url = f"{args.url}/v1/tokenize"
    small = orjson.dumps({"model": args.model, "prompt": "How many tokens is this?"})
    unit = "The quick brown fox jumps over the lazy dog; "
    tally = Tally()
    big_done = 0
    latencies: list[float] = []
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as heavy,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as light,
    ):

        async def big_loop() -> None:
            nonlocal big_done
            i = 0
            while time.time() < args.end_at:
                i += 1
                text = f"{i} {time.time()} " + unit * (args.big_chars // len(unit))  # never cached
                try:
                    await http_count(heavy, url, orjson.dumps({"model": args.model, "prompt": text}))
                    big_done += 1
                except Exception as exc:
                    tally.error(repr(exc))

        loader = None if args.no_big else asyncio.create_task(big_loop())
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        while time.time() < args.end_at:
            started = time.perf_counter()
            try:
                await http_count(light, url, small)
            except Exception as exc:
                tally.error(repr(exc))
                continue
            latencies.append(time.perf_counter() - started)
        if loader is not None:
            await loader
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else -1.0

    return {"small_requests": len(latencies), "big_requests": big_done, "errors": tally.errors,
            "error_samples": tally.samples, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": latencies[-1] * 1000 if latencies else -1.0}  # fmt: skip


def main() -> None:
    args = parse_args()
    runner = {"list": run_list, "rate": run_rate, "probe": run_probe}[args.mode]
    result = uvloop.run(runner(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
