"""Streamed text must equal the one-shot result, whatever the split of ids or text into chunks."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models

from dataplane.detokenizer import IncrementalDetokenizer, StopMatcher, TextStream
from dataplane.embedded import qwen_tokenizer_dir

REPLACEMENT = "\ufffd"
ENDOFTEXT, IM_START, IM_END, THINK_END = 151643, 151644, 151645, 151668  # THINK_END is added, not special
PROPERTY = settings(max_examples=200, deadline=None)


# --- tokenizers ------------------------------------------------------------------------------------------


@functools.cache
def qwen() -> Tokenizer:
    return Tokenizer.from_file(str(qwen_tokenizer_dir() / "tokenizer.json"))


@functools.cache
def qwen_with_context() -> Tokenizer:
    """The same vocabulary behind a decoder the detokenizer cannot prove context-free: the general path."""
    tok = Tokenizer.from_str(qwen().to_str())
    tok.decoder = decoders.Sequence([decoders.ByteLevel()])
    return tok


QWEN_PATHS = {"bytelevel": qwen, "context-window": qwen_with_context}

TOY_WORDS = ["<unk>", "▁Hello", "▁world", "!", "▁", "lo", "你", "▁好"]
TOY_EOS = len(TOY_WORDS) + 256  # "</s>", added after the words and the 256 byte tokens


@functools.cache
def sentencepiece_like(decoder: str) -> Tokenizer:
    """Llama-2/Mistral-style vocabulary: Metaspace words plus <0xNN> byte-fallback tokens and ``</s>``."""
    vocab = {word: i for i, word in enumerate(TOY_WORDS)}
    vocab |= {f"<0x{b:02X}>": len(TOY_WORDS) + b for b in range(256)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.add_special_tokens([AddedToken("</s>", special=True)])
    assert tok.token_to_id("</s>") == TOY_EOS
    if decoder == "metaspace":
        tok.decoder = decoders.Metaspace()
    else:
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    return tok


@functools.cache
def byte_token_ids() -> tuple[int, ...]:
    """Qwen's single-byte tokens, indexed by byte value (GPT-2's byte-to-unicode table)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    ids = tuple(qwen().token_to_id(chars[b]) for b in range(256))
    assert all(i is not None for i in ids)
    return cast(tuple[int, ...], ids)


# --- helpers ---------------------------------------------------------------------------------------------

Plan = str | list[int]


def chunked(items: Sequence[int], plan: Plan) -> list[list[int]]:
    """Split ``items`` one per chunk, all at once, or by cycling through sizes (0 = an empty push)."""
    if plan == "one":
        return [[x] for x in items]
    if plan == "all":
        return [list(items)]
    sizes = [*plan, 1]  # the final 1 guarantees progress
    out, at, k = [], 0, 0
    while at < len(items):
        size = sizes[k % len(sizes)]
        out.append(list(items[at : at + size]))
        at, k = at + size, k + 1
    return out


def split_text(text: str, plan: Plan) -> list[str]:
    return ["".join(chr(c) for c in part) for part in chunked([ord(c) for c in text], plan)]


def run(det: IncrementalDetokenizer, chunks: Sequence[Sequence[int]]) -> list[str]:
    return [det.push(chunk) for chunk in chunks] + [det.flush()]


def reference_stop(text: str, stops: Sequence[str], include_stop: bool) -> tuple[str, str | None]:
    """Non-streaming rule: the match that ends first wins; on a tie, the longest."""
    best: tuple[tuple[int, int], str, int] | None = None
    for stop in {s for s in stops if s}:
        at = text.find(stop)
        if at >= 0 and (best is None or (at + len(stop), -len(stop)) < best[0]):
            best = ((at + len(stop), -len(stop)), stop, at)
    if best is None:
        return text, None
    _, stop, at = best
    return text[: at + len(stop) if include_stop else at], stop


PIECES = [
    "Hello", " world", "a", "Z", "0", ".", ",", "!", " ", "  ", "\n", "\n\n", "\t",
    "你好", "世界", "，", "中文标点", "。", "龘", "𠀀", "鿿",
    "🤖", "🚀", "👋🏽", "👨\u200d👩\u200d👧", "🧑\u200d🚀", "🫠", "🇯🇵",
    "é", "ñ", "Å", "ß", "e\u0301", "Ω", "ق", "\ufffd",
]  # fmt: skip
texts = st.lists(
    st.one_of(st.sampled_from(PIECES), st.characters(exclude_categories=["Cs"])), max_size=30
).map("".join)
plans: st.SearchStrategy[Plan] = st.one_of(
    st.just("one"), st.just("all"), st.lists(st.integers(0, 6), min_size=1, max_size=5)
)
specials = st.sampled_from([ENDOFTEXT, IM_START, IM_END, THINK_END])


# --- IncrementalDetokenizer ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", QWEN_PATHS)
@pytest.mark.parametrize("skip", [True, False])
@PROPERTY
@given(text=texts, inserts=st.lists(st.tuples(st.integers(0, 10_000), specials), max_size=4), plan=plans)
def test_stream_equals_full_decode(
    path: str, skip: bool, text: str, inserts: list[tuple[int, int]], plan: Plan
) -> None:
    tok = QWEN_PATHS[path]()
    ids = tok.encode(text, add_special_tokens=False).ids
    for at, special in inserts:
        ids.insert(at % (len(ids) + 1), special)
    full = tok.decode(ids, skip_special_tokens=skip)
    det = IncrementalDetokenizer(tok, skip_special_tokens=skip)
    chunks = chunked(ids, plan)
    parts, fed = [], 0
    for chunk in chunks:
        parts.append(det.push(chunk))
        fed += len(chunk)
        # Prompt: everything is sent except a trailing run that may still be an incomplete character. A
        # trailing U+FFFD that can never complete (continuation bytes right after an added token) may go
        # out early; nothing else may.
        so_far, sent = tok.decode(ids[:fed], skip_special_tokens=skip), "".join(parts)
        assert so_far.startswith(sent) and sent.startswith(so_far.rstrip(REPLACEMENT))
    parts.append(det.flush())
    assert "".join(parts) == full
    if REPLACEMENT not in full:
        assert not any(REPLACEMENT in part for part in parts)


@pytest.mark.parametrize("path", QWEN_PATHS)
@pytest.mark.parametrize("skip", [True, False])
@PROPERTY
@given(data=st.data(), plan=plans)
def test_arbitrary_ids_including_invalid_utf8_equal_full_decode(
    path: str, skip: bool, data: st.DataObject, plan: Plan
) -> None:
    """Lone continuation bytes, truncated sequences, stray lead bytes: what a garbage-spewing model sends."""
    tok = QWEN_PATHS[path]()
    any_id = st.integers(0, tok.get_vocab_size() - 1)
    ids = data.draw(st.lists(st.one_of(st.sampled_from(byte_token_ids()), specials, any_id), max_size=40))
    full = tok.decode(ids, skip_special_tokens=skip)
    assert "".join(run(IncrementalDetokenizer(tok, skip_special_tokens=skip), chunked(ids, plan))) == full


@pytest.mark.parametrize("decoder", ["metaspace", "bytefallback"])
@PROPERTY
@given(data=st.data(), plan=plans)
def test_sentencepiece_decoders_equal_full_decode(decoder: str, data: st.DataObject, plan: Plan) -> None:
    tok = sentencepiece_like(decoder)
    word = st.integers(0, len(TOY_WORDS)).map(lambda i: [i])  # len(TOY_WORDS) is byte 0x00
    # Byte fallback as real models use it: the UTF-8 bytes of one whole character.
    char = st.sampled_from(["é", "界", "🚀"]).map(lambda c: [len(TOY_WORDS) + b for b in c.encode()])
    end = st.just([TOY_EOS])
    ids = [i for piece in data.draw(st.lists(st.one_of(word, char, end), max_size=12)) for i in piece]
    full = tok.decode(ids)
    assert "".join(run(IncrementalDetokenizer(tok), chunked(ids, plan))) == full


@pytest.mark.parametrize("path", QWEN_PATHS)
@PROPERTY
@given(prompt=texts, completion=texts, cut=st.integers(0, 10_000), plan=plans)
def test_priming_never_leaks_prompt_text(
    path: str, prompt: str, completion: str, cut: int, plan: Plan
) -> None:
    """The model continues the prompt's text; the split may even fall inside a character."""
    tok = QWEN_PATHS[path]()
    ids = tok.encode(prompt + completion, add_special_tokens=False).ids
    at = cut % (len(ids) + 1)
    det = IncrementalDetokenizer(tok, prompt_ids=ids[:at])
    assert "".join(run(det, chunked(ids[at:], plan))) == tok.decode(ids[at:])


@pytest.mark.parametrize(
    ("tokenizer", "prompt", "output", "expected"),
    [
        # Metaspace drops the first token's leading space in a one-shot decode; primed, it stays.
        (lambda: sentencepiece_like("metaspace"), [1], [2, 3], " world!"),
        (lambda: sentencepiece_like("metaspace"), [], [2, 3], "world!"),
        (lambda: sentencepiece_like("bytefallback"), [1], [2], " world"),
        (lambda: sentencepiece_like("bytefallback"), [TOY_EOS, 1], [2], " world"),  # </s> then a word
        (lambda: sentencepiece_like("bytefallback"), [], [2], "world"),
        # ByteLevel decodes the same either way: the leading space is part of the token.
        (qwen, [IM_START, 77091, 198], [21927, 1052], " Hello there"),
        (qwen_with_context, [IM_START, 77091, 198], [21927, 1052], " Hello there"),
        (qwen_with_context, [IM_START], [21927, 1052], " Hello there"),
    ],
)
def test_priming_keeps_leading_space_of_a_full_decode(
    tokenizer: Callable[[], Tokenizer], prompt: list[int], output: list[int], expected: str
) -> None:
    tok = tokenizer()
    for plan in ("one", "all"):
        det = IncrementalDetokenizer(tok, prompt_ids=prompt)
        assert "".join(run(det, chunked(output, plan))) == expected


def test_prompt_ending_inside_a_character_is_not_completed_by_the_output() -> None:
    tok = qwen_with_context()
    ids = tok.encode("ok 👨\u200d👩\u200d👧").ids
    partial = next(i for i in range(1, len(ids)) if tok.decode(ids[:i]).endswith(REPLACEMENT))
    det = IncrementalDetokenizer(tok, prompt_ids=ids[:partial])
    out = run(det, chunked(ids[partial:], "one"))
    assert "".join(out) == tok.decode(ids[partial:])
    assert "ok" not in "".join(out)


@pytest.mark.parametrize("path", QWEN_PATHS)
@pytest.mark.parametrize("chunk", [[-1], [151_669], [2**32], [10**20], [9707, 151_700, 1052]])
def test_out_of_range_id_raises_value_error_naming_it(path: str, chunk: list[int]) -> None:
    tok = QWEN_PATHS[path]()
    det = IncrementalDetokenizer(tok)
    assert det.push([9707]) == "Hello"
    bad = next(i for i in chunk if not 0 <= i < 151_669)
    with pytest.raises(ValueError, match=rf"token id {bad} is out of range"):
        det.push(chunk)
    assert det.push([1052]) + det.flush() == " there"  # the failed push left the stream untouched


@pytest.mark.parametrize("text", ["ok 🚀🫠", "你好 👨\u200d👩\u200d👧", "龘𠀀 é"])
def test_flush_releases_held_bytes_as_the_full_decode_does(text: str) -> None:
    """A stream cut off (max_tokens) inside a character ends with U+FFFD, exactly like the full decode."""
    tok = qwen()
    ids = tok.encode(text).ids
    cut_inside = [n for n in range(1, len(ids)) if tok.decode(ids[:n]).endswith(REPLACEMENT)]
    assert cut_inside
    for n in cut_inside:
        full = tok.decode(ids[:n])
        det = IncrementalDetokenizer(tok)
        streamed = "".join(det.push([i]) for i in ids[:n])
        assert streamed == full.rstrip(REPLACEMENT)
        assert streamed + det.flush() == full
        assert det.flush() == ""


def test_empty_push_returns_empty_text() -> None:
    det = IncrementalDetokenizer(qwen())
    assert det.push([]) == ""
    assert det.push([9707]) == "Hello"
    assert det.push(()) == ""


class CountingTokenizer:
    """Fake that records the longest window the detokenizer asks to decode."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner = inner
        self.decoder = inner.decoder
        self.longest = 0

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        self.longest = max(self.longest, len(ids))
        return self.inner.decode(ids, skip_special_tokens)

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        return self.inner.get_vocab_size(with_added_tokens)

    def get_added_tokens_decoder(self) -> dict[int, AddedToken]:
        return self.inner.get_added_tokens_decoder()


@pytest.mark.parametrize(
    ("path", "ids"),
    [
        ("bytelevel", [byte_token_ids()[0x80]] * 3000 + [9707]),  # never-ending invalid bytes
        ("bytelevel", [byte_token_ids()[0xF0]] * 3000),  # lead bytes that never complete
        ("bytelevel", [IM_END] * 3000 + [9707]),  # invisible (skipped) tokens
        ("context-window", [IM_END] * 3000 + [9707]),
    ],
)
def test_window_stays_bounded_on_garbage(path: str, ids: list[int]) -> None:
    fake = CountingTokenizer(QWEN_PATHS[path]())
    det = IncrementalDetokenizer(cast(Tokenizer, fake))
    assert "".join(run(det, chunked(ids, "one"))) == fake.inner.decode(ids)
    assert fake.longest <= 128


@pytest.mark.parametrize("tokenizer", [qwen, qwen_with_context, lambda: sentencepiece_like("bytefallback")])
@pytest.mark.parametrize("garbage", [0x80, 0xF0])
def test_long_invalid_run_then_a_valid_character(tokenizer: Callable[[], Tokenizer], garbage: int) -> None:
    """Past a long invalid run the window is re-anchored; the re-anchoring must not change the text."""
    tok = tokenizer()
    first = tok.token_to_id("<0x00>")
    byte = byte_token_ids() if first is None else range(first, first + 256)
    for n in range(20, 80):
        ids = [byte[garbage]] * n + [byte[b] for b in "你!".encode()]
        assert "".join(run(IncrementalDetokenizer(tok), chunked(ids, "one"))) == tok.decode(ids)


def test_known_exception_bytefallback_invalid_run_rewrites_a_sent_character() -> None:
    """Documented: ByteFallback turns the whole byte run 你+0x80 into U+FFFDs; the stream cannot unsend 你."""
    tok = sentencepiece_like("bytefallback")
    ids = [len(TOY_WORDS) + b for b in [*"你".encode(), 0x80]]
    assert tok.decode(ids) == REPLACEMENT * 4
    assert "".join(run(IncrementalDetokenizer(tok), chunked(ids, "one"))) == "你" + REPLACEMENT * 3


def test_out_of_range_prompt_id_raises_value_error() -> None:
    with pytest.raises(ValueError, match="token id 151669 is out of range"):
        IncrementalDetokenizer(qwen(), prompt_ids=[9707, 151_669])


# --- StopMatcher -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "stops", "include", "expected", "matched"),
    [
        (["Hel", "lo world"], ["Help"], False, "Hello world", None),  # a stop's prefix in normal text
        (["He", "l", "p me"], ["Help"], False, "", "Help"),
        (["abc"], ["abc", "b"], False, "a", "b"),  # "b" ends first
        (["xabc"], ["bc", "abc"], False, "x", "abc"),  # same end: the longest
        (["STOP", "rest"], ["STOP"], False, "", "STOP"),  # at the very start
        (["text ", "STO", "P"], ["STOP"], False, "text ", "STOP"),  # at the very end, straddling
        (["foo </s", "> bar"], ["</s>"], False, "foo ", "</s>"),
        (["foo </s", "> bar"], ["</s>"], True, "foo </s>", "</s>"),
        (["a", "b", "c", "d"], ["bcd", "cx"], False, "a", "bcd"),
        (["aaab"], ["aab"], False, "a", "aab"),
        (["x", "y"], ["", "y", "y"], False, "x", "y"),  # empty ignored, duplicates fine
        (["no match here"], ["zz", "qq"], False, "no match here", None),
    ],
)
def test_stop_matcher_table(
    chunks: list[str], stops: list[str], include: bool, expected: str, matched: str | None
) -> None:
    matcher = StopMatcher(stops, include_stop=include)
    out = "".join(matcher.push(c) for c in chunks) + matcher.flush()
    assert (out, matcher.matched, matcher.stopped) == (expected, matched, matched is not None)
    if matched:
        assert matcher.push("more") == ""


def test_stop_prefix_is_held_then_released() -> None:
    matcher = StopMatcher(["Help"])
    assert matcher.push("Hel") == ""
    assert matcher.push("lo") == "Hello"
    assert matcher.push("He") == ""
    assert matcher.flush() == "He"


def test_no_stops_is_a_pass_through() -> None:
    matcher = StopMatcher(["", ""])
    text = "anything </s> at all"
    assert matcher.push(text) is text
    assert matcher.flush() == ""


def held_minimum(consumed: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``consumed`` that is a proper prefix of some stop."""
    return max(
        (n for s in stops if s for n in range(1, len(s)) if consumed.endswith(s[:n])),
        default=0,
    )


@PROPERTY
@given(data=st.data(), include=st.booleans(), plan=plans)
def test_stop_matcher_streaming_equals_non_streaming(data: st.DataObject, include: bool, plan: Plan) -> None:
    text = data.draw(st.text(alphabet="ab \n你好👋", max_size=40))
    substring = st.tuples(st.integers(0, len(text)), st.integers(1, 6)).map(
        lambda p: text[p[0] : p[0] + p[1]]
    )
    stops = data.draw(st.lists(st.one_of(substring, st.text(alphabet="ab 你👋", max_size=5)), max_size=4))
    expected, matched = reference_stop(text, stops, include)
    matcher = StopMatcher(stops, include_stop=include)
    out, consumed = "", ""
    longest = max((len(s) for s in stops), default=0)
    for part in split_text(text, plan):
        out += matcher.push(part)
        consumed += part
        if not matcher.stopped:  # only the shortest tail that could still start a stop is held back
            assert len(consumed) - len(out) == held_minimum(consumed, stops) <= max(longest - 1, 0)
    out += matcher.flush()
    assert (out, matcher.matched) == (expected, matched)


# --- TextStream ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", ["one", "all", [2], [3, 1]])
@pytest.mark.parametrize(
    ("text", "stops", "expected", "matched"),
    [
        ("你好世界，中文标点。再见", ["界，中"], "你好世", "界，中"),  # starts inside the token 世界
        ("你好世界，中文标点。再见", ["标点。再"], "你好世界，中文", "标点。再"),
        ("family: 👨\u200d👩\u200d👧 ok", ["\u200d👩"], "family: 👨", "\u200d👩"),  # inside a split emoji
        ("family: 👨\u200d👩\u200d👧 ok", ["👧 o", "ok"], "family: 👨\u200d👩\u200d", "👧 o"),
        ("你好世界", ["界界"], "你好世界", None),
    ],
)
def test_text_stream_stops_straddling_token_boundaries(
    plan: Plan, text: str, stops: list[str], expected: str, matched: str | None
) -> None:
    tok = qwen()
    stream = TextStream(tok, stops=stops)
    out = "".join(stream.push(c) for c in chunked(tok.encode(text).ids, plan)) + stream.flush()
    assert (out, stream.matched_stop, stream.stopped) == (expected, matched, matched is not None)


@pytest.mark.parametrize("path", QWEN_PATHS)
@PROPERTY
@given(data=st.data(), include=st.booleans(), plan=plans)
def test_text_stream_equals_decode_then_cut(
    path: str, data: st.DataObject, include: bool, plan: Plan
) -> None:
    tok = QWEN_PATHS[path]()
    ids = tok.encode(data.draw(texts)).ids
    full = tok.decode(ids)
    substring = st.tuples(st.integers(0, len(full)), st.integers(1, 5)).map(
        lambda p: full[p[0] : p[0] + p[1]]
    )
    stops = data.draw(st.lists(st.one_of(substring, st.sampled_from(PIECES)), max_size=3))
    stream = TextStream(tok, stops=stops, include_stop=include, prompt_ids=[IM_START, 77091, 198])
    out = "".join(stream.push(c) for c in chunked(ids, plan)) + stream.flush()
    assert (out, stream.matched_stop) == reference_stop(full, stops, include)
    if stream.stopped:
        assert stream.push([9707]) == "" and stream.flush() == ""
