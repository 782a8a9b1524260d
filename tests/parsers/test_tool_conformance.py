"""The conformance suite every tool parser runs, through its format's writer (tests/parsers/formats.py).

Each scenario is parsed whole and streamed (one-character deltas and seeded random splits) and the
results must be identical; hypothesis then searches for splits and mangled outputs that break that.
"""

from __future__ import annotations

import random
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import make_tool_parser
from tests.parsers.formats import FORMATS, Call, Format, tools_for
from tests.parsers.streaming import Outcome, canonical, complete, cut, every_way, fold, stream

FMT = pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.id)
TOOLS = pytest.mark.parametrize("typed", [True, False], ids=["tools", "no-tools"])

ONE: list[Call] = [("get_weather", {"city": "Paris", "days": 3})]
PARALLEL: list[Call] = [
    ("get_weather", {"city": "Paris", "unit": "celsius"}),
    ("get_time", {"zone": "UTC", "h24": True}),
    ("get_weather", {"city": "東京", "days": 2}),
]
TYPES: list[Call] = [
    (
        "types",
        {
            "s": "text",
            "digits": "0042",
            "i": 42,
            "neg": -7,
            "f": 3.25,
            "t": True,
            "fa": False,
            "n": None,
            "obj": {"a": [1, {"b": None}], "c": "d", "e": 1.5},
            "arr": [1, "two", 3.0, False, None, [], {}],
            "empty_obj": {},
            "empty_arr": [],
        },
    )
]
EMPTY: list[Call] = [("ping", {})]
ESCAPES: list[Call] = [
    (
        "echo",
        {
            "text": 'He said "hi" \\ back\\slash\nnew line\ttab 中文 😀 é ü',
            "path": "C:\\dir\\file.txt",
            "quote": "it's",
            "code": "def f(x):\n    return {'a': [x]}\n",
            "html": "<b>a & b</b> &amp; &lt;",
            "graphemes": "e\u0301 👩\u200d💻 🇫🇷 \u2028 \x07",
        },
    )
]
BEFORE, AFTER = "Let me check: 2 < 3 [a] {b}.\n", "\nDone — 完了 😀."
PLAIN = "Plain answer: 2 < 3, [note] (x) and {braces}; a=1, b='q'.\n中文 😀 <b>bold</b> [[x]]"
LONG = "The quick brown fox jumps over the lazy dog. " * 50


def assert_calls(out: Outcome, calls: list[Call], fmt: Format) -> None:
    assert [c[0] for c in out.calls] == [n for n, _ in calls]
    assert [canonical(a) for a in out.args()] == [canonical(a) for _, a in calls]
    if fmt.call_ids is not None:
        assert [c[2] for c in out.calls] == fmt.call_ids(calls)


def check(fmt: Format, calls: list[Call], typed: bool = True, before: str = "", after: str = "") -> None:
    text = before + fmt.write(calls) + after
    out = every_way(fmt.parser, text, tools_for(calls) if typed else None)
    assert out.normal == before + after
    assert_calls(out, calls, fmt)


@FMT
def test_no_call(fmt: Format) -> None:
    out = every_way(fmt.parser, PLAIN)
    assert out == Outcome(PLAIN, ())


@FMT
@TOOLS
def test_one_call(fmt: Format, typed: bool) -> None:
    check(fmt, ONE, typed)


@FMT
@TOOLS
def test_parallel_calls(fmt: Format, typed: bool) -> None:
    check(fmt, PARALLEL, typed)


@FMT
def test_every_json_type(fmt: Format) -> None:
    check(fmt, TYPES)


@FMT
@TOOLS
def test_empty_arguments(fmt: Format, typed: bool) -> None:
    check(fmt, EMPTY, typed)
    assert complete(fmt.parser, fmt.write(EMPTY)).calls[0][1] == "{}"


@FMT
def test_text_around_calls(fmt: Format) -> None:
    check(fmt, ONE, before=BEFORE, after=AFTER)
    check(fmt, PARALLEL, typed=False, before=BEFORE, after=AFTER)


@FMT
@TOOLS
def test_escapes_and_unicode(fmt: Format, typed: bool) -> None:
    check(fmt, ESCAPES, typed, before="«", after="»")


@FMT
def test_malformed_call_is_normal_text(fmt: Format) -> None:
    for bad in fmt.bad:
        text = "before " + bad + " after"
        assert every_way(fmt.parser, text) == Outcome(text, ()), bad


@FMT
def test_unknown_tool_is_normal_text(fmt: Format) -> None:
    text = BEFORE + fmt.write([("not_a_tool", {"x": 1})]) + AFTER
    assert every_way(fmt.parser, text, tools_for(ONE)) == Outcome(text, ())


@FMT
def test_output_cut_anywhere(fmt: Format) -> None:
    """Cut off before its name is complete, a call is normal text; after, it is a call whose arguments
    parse (an unfinished string is closed, an unfinished key dropped)."""
    block = fmt.write(PARALLEL[:1])
    name_end = block.index("get_weather") + len("get_weather")
    for end in range(len(block) + 1):
        text = BEFORE + block[:end]
        out = complete(fmt.parser, text)
        if end < name_end or not out.calls:
            assert out == Outcome(text, ()), end
        else:
            assert out.normal == BEFORE, end
            assert [c[0] for c in out.calls] == ["get_weather"], end
            assert isinstance(out.args()[0], dict) and set(out.args()[0]) <= {"city", "unit"}
        if end % 7 == 0:
            assert every_way(fmt.parser, text, seeds=2) == out


@FMT
def test_plain_text_is_not_held_back(fmt: Format) -> None:
    parser = make_tool_parser(fmt.parser)
    assert parser.feed("Hello world. ").normal_text == "Hello world. "
    block = fmt.write(ONE)
    assert parser.feed("More text " + block[:1]).normal_text == "More text "


@FMT
@TOOLS
def test_arguments_stream_before_the_call_ends(fmt: Format, typed: bool) -> None:
    calls: list[Call] = [("write_file", {"path": "notes.txt", "content": LONG})]
    text = "Saving. " + fmt.write(calls)
    value_end = text.index(LONG) + len(LONG)
    parser = make_tool_parser(fmt.parser, tools_for(calls) if typed else None)
    parses = [parser.feed(text[i : min(i + 5, value_end)]) for i in range(0, value_end, 5)]
    early = fold(parses)
    assert [c[0] for c in early.calls] == ["write_file"]
    assert len(early.calls[0][1]) > len(LONG) * 0.9, "arguments held back until the end of the call"
    parses += [parser.feed(text[value_end:]), parser.finish()]
    assert_calls(fold(parses), calls, fmt)


def test_passthrough_never_parses() -> None:
    for fmt in FORMATS:
        text = BEFORE + fmt.write(PARALLEL) + AFTER
        assert every_way("passthrough", text, seeds=2) == Outcome(text, ())


@cache
def samples(fmt: Format) -> tuple[str, ...]:
    block = fmt.write(PARALLEL)
    return (
        BEFORE + fmt.write(ONE) + AFTER,
        block,
        fmt.write(TYPES),
        fmt.write(ESCAPES) + AFTER,
        BEFORE + block[: len(block) // 2],
        BEFORE + block[: len(block) // 3],
        PLAIN,
        *(b + AFTER for b in fmt.bad),
    )


@FMT
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_split_matches_complete(fmt: Format, data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(samples(fmt)))
    points = data.draw(st.lists(st.integers(0, len(text)), max_size=len(text) // 2 + 2))
    tools = tools_for(PARALLEL) if data.draw(st.booleans()) else None
    expected = complete(fmt.parser, text, tools)
    assert stream(make_tool_parser(fmt.parser, tools), cut(text, points)) == expected


_NOISE = st.text(alphabet=" \n\"'{}[](),:;=<>/\\|xa1", max_size=3)


@FMT
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mangled_output_never_breaks_the_contract(fmt: Format, data: st.DataObject) -> None:
    """Spliced pieces of real calls with noise: no exception, the delta contract holds, every call's
    arguments parse as an object, and streaming equals non-streaming."""
    source = fmt.write(PARALLEL)
    spans = st.tuples(st.integers(0, len(source)), st.integers(0, 40), _NOISE)
    text = "".join(source[a : a + n] + noise for a, n, noise in data.draw(st.lists(spans, max_size=8)))
    expected = complete(fmt.parser, text)
    assert all(isinstance(a, dict) for a in expected.args())
    rng = random.Random(data.draw(st.integers(0, 2**16)))
    pieces = cut(text, rng.sample(range(len(text) + 1), min(len(text), 12)))
    assert stream(make_tool_parser(fmt.parser), pieces) == expected


def test_every_registered_tool_parser_is_covered() -> None:
    from parsers import TOOL_PARSER_NAMES

    aliases = {"qwen_coder", "glm45_moe", "glm47_moe", "passthrough"}
    assert set(TOOL_PARSER_NAMES) - aliases == {f.parser for f in FORMATS}
