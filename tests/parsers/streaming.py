"""Running parsers over split text, and folding their deltas into comparable outcomes."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from parsers import ToolParse, ToolParser, make_tool_parser, parse_complete
from parsers.types import ReasoningParser


@dataclass(frozen=True)
class Outcome:
    normal: str
    calls: tuple[tuple[str, str, str | None], ...]  # name, arguments, id

    def args(self) -> list[Any]:
        return [json.loads(a) for _, a, _ in self.calls]


def fold(parses: Iterable[ToolParse]) -> Outcome:
    """Folds streamed deltas, checking the delta contract on the way: a call's first delta names it,
    later ones do not, and calls appear with indices 0, 1, 2, …"""
    normal: list[str] = []
    names: dict[int, str] = {}
    ids: dict[int, str | None] = {}
    args: dict[int, list[str]] = {}
    for parse in parses:
        normal.append(parse.normal_text)
        for d in parse.calls:
            if d.tool_index not in names:
                assert d.tool_index == len(names), f"tool_index {d.tool_index} after {sorted(names)}"
                assert d.name is not None, "the first delta of a call carries its name"
                names[d.tool_index], ids[d.tool_index] = d.name, d.id
                args[d.tool_index] = []
            else:
                assert d.name is None, "the name is sent once"
            args[d.tool_index].append(d.arguments_delta)
    calls = tuple((names[i], "".join(args[i]), ids[i]) for i in sorted(names))
    return Outcome("".join(normal), calls)


def stream(parser: ToolParser, pieces: Iterable[str]) -> Outcome:
    parses = [parser.feed(p) for p in pieces]
    parses.append(parser.finish())
    return fold(parses)


def complete(name: str, text: str, tools: Sequence[Any] | None = None) -> Outcome:
    normal, calls = parse_complete(make_tool_parser(name, tools), text)
    return Outcome(normal, tuple((c.name, c.arguments, c.id) for c in calls))


def random_pieces(text: str, rng: random.Random, longest: int = 8) -> list[str]:
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(1, longest)
        pieces.append(text[i : i + n])
        i += n
    return pieces


def cut(text: str, points: Iterable[int]) -> list[str]:
    bounds = sorted({0, len(text), *(p for p in points if 0 <= p <= len(text))})
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def every_way(name: str, text: str, tools: Sequence[Any] | None = None, seeds: int = 12) -> Outcome:
    """The non-streaming outcome, after checking that one-character deltas and seeded random splits
    give exactly the same."""
    expected = complete(name, text, tools)
    assert stream(make_tool_parser(name, tools), text) == expected, "one-character deltas differ"
    for seed in range(seeds):
        pieces = random_pieces(text, random.Random(seed))
        assert stream(make_tool_parser(name, tools), pieces) == expected, f"split seed {seed} differs"
    return expected


def canonical(value: object) -> str:
    """JSON text that tells 1 from 1.0 and from true."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def reason(parser: ReasoningParser, pieces: Iterable[str]) -> tuple[str, str]:
    reasoning: list[str] = []
    normal: list[str] = []
    for piece in pieces:
        r, n = parser.feed(piece)
        reasoning.append(r)
        normal.append(n)
    r, n = parser.finish()
    return "".join(reasoning) + r, "".join(normal) + n
