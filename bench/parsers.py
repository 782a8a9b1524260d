"""Streaming parse throughput of every tool-call and reasoning parser.

    .venv/bin/python bench/parsers.py [--seconds 0.3] [--only qwen]

Each tool parser streams a realistic output of its own format (the conformance suite's writers in
tests/parsers/formats.py): a paragraph of text, four calls (one with a 1.5 KB file body full of quotes,
newlines and CJK), a closing sentence; each reasoning parser a 3 KB reasoning block and an answer. The
text arrives in deltas of 4-8 characters, as a detokenizer emits it. Before timing, the streamed
result is checked against the non-streaming parse. Prints MB/s (UTF-8 bytes) and µs per delta.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parsers.reasoning import REASONING_FORMATS  # noqa: E402
from parsers.registry import make_reasoning_parser, make_tool_parser  # noqa: E402
from parsers.types import parse_complete  # noqa: E402
from tests.parsers.formats import FORMATS, Call, tools_for  # noqa: E402

PROSE = (
    "Sure — I can help with that. First I'll look up the current conditions, then check the local time, "
    "and finally save a short summary for you. Note: forecasts beyond 5 days are *approximate*; values "
    "are in °C (x < 10 means cold). 東京の天気も確認します。\n\n"
)
FILE_BODY = (
    'def summarize(city: str) -> str:\n    """Say "hello" to {city}."""\n'
    '    return f"Weather in {city}: \\n"\n# 天気 ☀️ — it\'s fine\n'
) * 12
CALLS: list[Call] = [
    ("search", {"query": "weather in Paris this weekend", "max_results": 5, "safe": True}),
    ("get_weather", {"city": "東京", "days": 3, "unit": "celsius"}),
    ("write_file", {"path": "notes/summary.py", "content": FILE_BODY, "overwrite": False}),
    ("schedule", {"when": {"day": "2025-06-01", "hour": 9.5}, "attendees": ["ana", "bo"], "note": None}),
]
CLOSING = "\n\nI've started those requests; I'll report back with the results shortly."


def deltas(text: str, seed: int = 0) -> list[str]:
    rng, out, i = random.Random(seed), [], 0
    while i < len(text):
        n = rng.randint(4, 8)
        out.append(text[i : i + n])
        i += n
    return out


def timed(run: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Repetitions and elapsed time of `run` over at least `seconds`."""
    reps, start = 0, time.perf_counter()
    while True:
        run()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return reps, elapsed


def row(name: str, kind: str, text: str, pieces: Sequence[str], reps: int, elapsed: float) -> str:
    size = len(text.encode())
    mbps = size * reps / elapsed / 1e6
    per_delta = elapsed / (reps * len(pieces)) * 1e6
    return f"{name:<14} {kind:<10} {size:>7} {len(pieces):>7} {mbps:>8.2f} {per_delta:>10.2f}"


def bench_tools(seconds: float, only: str | None) -> list[str]:
    rows = []
    tools = tools_for(CALLS)
    for fmt in FORMATS:
        if only and only not in (fmt.id, fmt.parser):
            continue
        text = PROSE + fmt.write(CALLS) + CLOSING
        pieces = deltas(text)
        name = fmt.parser

        def run(name: str = name, pieces: Sequence[str] = pieces) -> tuple[str, int]:
            parser = make_tool_parser(name, tools)
            normal, calls = [], 0
            for piece in pieces:
                parse = parser.feed(piece)
                normal.append(parse.normal_text)
                calls += sum(d.name is not None for d in parse.calls)
            last = parser.finish()
            return "".join(normal) + last.normal_text, calls + sum(d.name is not None for d in last.calls)

        expected_text, expected_calls = parse_complete(make_tool_parser(name, tools), text)
        assert len(expected_calls) == len(CALLS), f"{fmt.id}: {len(expected_calls)} calls"
        assert run() == (expected_text, len(CALLS)) and expected_text == PROSE + CLOSING, fmt.id
        rows.append(row(fmt.id, "tools", text, pieces, *timed(run, seconds)))
    return rows


def bench_reasoning(seconds: float, only: str | None) -> list[str]:
    rows = []
    for name, fmt in REASONING_FORMATS.items():
        if only and only != name:
            continue
        text = fmt.start + ((PROSE + FILE_BODY) * 2)[:3000] + fmt.end + PROSE + CLOSING
        pieces = deltas(text)

        def run(name: str = name, pieces: Sequence[str] = pieces) -> int:
            parser = make_reasoning_parser(name, starts_in_reasoning=False)
            total = sum(len(r) for r, _ in map(parser.feed, pieces))
            return total + len(parser.finish().reasoning)

        assert run() == 3000, name
        rows.append(row(name, "reasoning", text, pieces, *timed(run, seconds)))
    return rows


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    args.add_argument("--seconds", type=float, default=0.3, help="time per parser (default 0.3)")
    args.add_argument("--only", help="one format or parser name")
    opts = args.parse_args()
    print(f"{'parser':<14} {'kind':<10} {'bytes':>7} {'deltas':>7} {'MB/s':>8} {'µs/delta':>10}")
    for line in bench_tools(opts.seconds, opts.only) + bench_reasoning(opts.seconds, opts.only):
        print(line)
    print(f"python {sys.version.split()[0]}; deltas of 4-8 characters; one fresh parser per output")


if __name__ == "__main__":
    main()
