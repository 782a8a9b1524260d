"""Reasoning parsers: markers split anywhere, text before the start marker, templates that open the
block, and the split property (streaming equals non-streaming)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers import REASONING_PARSER_NAMES, make_reasoning_parser
from parsers.reasoning import REASONING_FORMATS
from tests.parsers.streaming import cut, random_pieces, reason

NAMES = sorted(REASONING_FORMATS)
NAME = pytest.mark.parametrize("name", NAMES)
ALWAYS = {"deepseek_r1", "qwen3_thinking", "kimi_thinking", "step3", "minimax"}


def markers(name: str) -> tuple[str, str]:
    fmt = REASONING_FORMATS[name]
    return fmt.start, fmt.end


def whole(name: str, text: str, starts: bool | None = None) -> tuple[str, str]:
    return reason(make_reasoning_parser(name, starts), [text])


@NAME
def test_block_then_answer(name: str) -> None:
    s, e = markers(name)
    assert whole(name, f"{s}Let me think.\n{e}\n\nThe answer is 4.") == (
        "Let me think.\n",
        "\n\nThe answer is 4.",
    )


@NAME
def test_text_before_the_start_marker_is_normal(name: str) -> None:
    s, e = markers(name)
    assert whole(name, f"Hi {s}hmm{e} there", starts=False) == ("hmm", "Hi  there")


@NAME
def test_starts_in_reasoning(name: str) -> None:
    s, e = markers(name)
    assert whole(name, f"hmm{e}answer", starts=True) == ("hmm", "answer")
    assert whole(name, f"{s}hmm{e}answer", starts=True) == ("hmm", "answer")  # a repeated opener is dropped
    assert whole(name, "thinking, cut off", starts=True) == ("thinking, cut off", "")
    assert whole(name, f"hmm{e}answer") == (("hmm", "answer") if name in ALWAYS else ("", f"hmm{e}answer"))


@NAME
def test_no_markers_is_all_answer(name: str) -> None:
    assert whole(name, "just an answer < with > brackets", starts=False) == (
        "",
        "just an answer < with > brackets",
    )


@NAME
def test_unterminated_block_is_all_reasoning(name: str) -> None:
    s, _ = markers(name)
    assert whole(name, f"A {s}thinking, cut off", starts=False) == ("thinking, cut off", "A ")


@NAME
def test_only_a_possible_marker_is_held_back(name: str) -> None:
    s, e = markers(name)
    parser = make_reasoning_parser(name, starts_in_reasoning=False)
    assert parser.feed("abc" + s[:2]) == ("", "abc")
    inside = [parser.in_reasoning]
    assert parser.feed(s[2:] + "x") == ("x", "")
    inside.append(parser.in_reasoning)
    assert parser.feed("y" + e[:-1]) == ("y", "")
    assert parser.feed(e[-1] + "z") == ("", "z")
    inside.append(parser.in_reasoning)
    assert inside == [False, True, False]
    assert parser.feed(s + "w") == ("", s + "w")  # one block per output


@NAME
def test_partial_marker_at_the_end_is_flushed(name: str) -> None:
    s, e = markers(name)
    assert whole(name, f"{s}abc{e[:-1]}", starts=False) == (f"abc{e[:-1]}", "")
    assert whole(name, f"abc{s[:-1]}", starts=False) == ("", f"abc{s[:-1]}")


def samples(name: str) -> list[str]:
    s, e = markers(name)
    return [
        f"{s}Let me think {s[:3]} about {e[:3]} it.\n{e}\n\nAnswer {e} again {s}.",
        f"pre {s}a{e}b",
        f"{s}{e}",
        f"{s}unterminated {e[:-1]}",
        f"no markers at all {s[:-1]}",
        f"{e}{s}{e}",
    ]


@NAME
def test_seeded_splits_match_whole(name: str) -> None:
    for text in samples(name):
        for starts in (False, True, None):
            expected = whole(name, text, starts)
            assert reason(make_reasoning_parser(name, starts), text) == expected
            for seed in range(20):
                pieces = random_pieces(text, random.Random(seed), longest=6)
                assert reason(make_reasoning_parser(name, starts), pieces) == expected


@NAME
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_split_matches_whole(name: str, data: st.DataObject) -> None:
    s, e = markers(name)
    parts = st.sampled_from([s, e, s[:2], e[:3], "x", " ", "\n", "中", "😀", "<", "|", "▷"])
    text = "".join(data.draw(st.lists(parts, max_size=20)))
    starts = data.draw(st.sampled_from([False, True, None]))
    points = data.draw(st.lists(st.integers(0, len(text)), max_size=10))
    expected = whole(name, text, starts)
    assert reason(make_reasoning_parser(name, starts), cut(text, points)) == expected


def test_passthrough() -> None:
    parser = make_reasoning_parser("passthrough", starts_in_reasoning=True)
    assert parser.feed("<think>a</think>b") == ("", "<think>a</think>b")
    assert not parser.in_reasoning
    assert parser.finish() == ("", "")


def test_names() -> None:
    assert set(REASONING_PARSER_NAMES) == {*NAMES, "passthrough"}
    assert {"deepseek_r1", "qwen3", "qwen3_thinking", "glm45", "kimi", "kimi_thinking", "step3", "minimax",
            "cohere_cmd", "nano_v3"} <= set(NAMES)  # fmt: skip
