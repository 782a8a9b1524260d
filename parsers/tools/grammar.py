"""Patterns that match on a prefix of the text seen so far and can answer "not yet".

A pattern matched at index `i` of `s` returns the end index of its match, `NEED` when `s` ends while the
pattern could still match (more text decides), or `FAIL`. Choice is ordered (PEG): an alternative that
still NEEDs blocks the ones after it, so the answer never depends on where the text was cut. Captured
strings go into `caps`.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable

NEED = -1
FAIL = -2
Caps = dict[str, str]

_WS = re.compile(r"\s*")
_WS_CHARS = " \t\r\n"
_BARE = re.compile(r"[^\s>\"']+")


class Pattern(ABC):
    """Base of all patterns; `first` is every character a non-empty match can start with."""

    first: str = ""
    nullable: bool = False

    @abstractmethod
    def match(self, s: str, i: int, caps: Caps) -> int: ...


class Lit(Pattern):
    """A literal string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.first = text[0]

    def match(self, s: str, i: int, caps: Caps) -> int:
        text = self.text
        if s.startswith(text, i):
            return i + len(text)
        rest = s[i:]
        return NEED if len(rest) < len(text) and text.startswith(rest) else FAIL


class Ws(Pattern):
    """Zero or more whitespace characters."""

    first = _WS_CHARS
    nullable = True

    def match(self, s: str, i: int, caps: Caps) -> int:
        m = _WS.match(s, i)
        assert m is not None
        return m.end()


class Empty(Pattern):
    nullable = True

    def match(self, s: str, i: int, caps: Caps) -> int:
        return i


class Until(Pattern):
    """Captures the (stripped) text up to the first of `stops`; fails past `limit` characters."""

    def __init__(self, cap: str, stops: str, limit: int = 256) -> None:
        self.cap, self.limit = cap, limit
        self._stop = re.compile("[" + re.escape(stops) + "]")
        self.nullable = True

    def match(self, s: str, i: int, caps: Caps) -> int:
        m = self._stop.search(s, i, i + self.limit + 1)
        if m is None:
            return NEED if len(s) - i <= self.limit else FAIL
        caps[self.cap] = s[i : m.start()].strip()
        return m.start()


class Chars(Pattern):
    """Captures a run of characters that all match `char_re` (one character class)."""

    def __init__(self, cap: str, char_re: str, first_re: str, limit: int = 256) -> None:
        self.cap, self.limit = cap, limit
        self._run = re.compile(f"{first_re}{char_re}*")
        self._first_char = re.compile(first_re)
        self.first = "".join(chr(c) for c in range(128) if self._first_char.fullmatch(chr(c)))

    def match(self, s: str, i: int, caps: Caps) -> int:
        if i >= len(s):
            return NEED
        m = self._run.match(s, i)
        if m is None or m.end() - i > self.limit:
            return FAIL
        if m.end() == len(s):
            return NEED
        caps[self.cap] = m.group()
        return m.end()


class JStr(Pattern):
    """A JSON string literal; captures its decoded value."""

    first = '"'
    _body = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)

    def __init__(self, cap: str, limit: int = 1024) -> None:
        self.cap, self.limit = cap, limit

    def match(self, s: str, i: int, caps: Caps) -> int:
        if i >= len(s):
            return NEED
        if s[i] != '"':
            return FAIL
        m = self._body.match(s, i, i + self.limit)
        if m is None:
            return NEED if len(s) - i < self.limit else FAIL
        try:
            value = json.loads(m.group())
        except ValueError:
            return FAIL
        caps[self.cap] = value
        return m.end()


class Attr(Pattern):
    """An XML attribute value: "double", 'single' quoted or bare up to whitespace or `>`."""

    first = "\"'"

    def __init__(self, cap: str, limit: int = 256) -> None:
        self.cap, self.limit = cap, limit

    def match(self, s: str, i: int, caps: Caps) -> int:
        if i >= len(s):
            return NEED
        quote = s[i]
        if quote in "\"'":
            end = s.find(quote, i + 1, i + self.limit + 2)
            if end < 0:
                return NEED if len(s) - i <= self.limit else FAIL
            caps[self.cap] = s[i + 1 : end]
            return end + 1
        m = _BARE.match(s, i)
        if m is None or m.end() - i > self.limit:
            return FAIL
        if m.end() == len(s):
            return NEED
        caps[self.cap] = m.group()
        return m.end()


class Check(Pattern):
    """Matches the empty string when `test(caps)` holds; `test` may also rewrite captures."""

    nullable = True

    def __init__(self, test: Callable[[Caps], bool]) -> None:
        self.test = test

    def match(self, s: str, i: int, caps: Caps) -> int:
        return i if self.test(caps) else FAIL


class Seq(Pattern):
    def __init__(self, *parts: Pattern | str) -> None:
        self.parts = [Lit(p) if isinstance(p, str) else p for p in parts]
        first = ""
        for part in self.parts:
            first += part.first
            if not part.nullable:
                break
        self.first = first
        self.nullable = all(p.nullable for p in self.parts)

    def match(self, s: str, i: int, caps: Caps) -> int:
        for part in self.parts:
            i = part.match(s, i, caps)
            if i < 0:
                return i
        return i


class Alt(Pattern):
    """Ordered choice: the first alternative that matches, unless an earlier one still NEEDs."""

    def __init__(self, *alts: Pattern | str) -> None:
        self.alts = [Lit(p) if isinstance(p, str) else p for p in alts]
        self.first = "".join(a.first for a in self.alts)
        self.nullable = any(a.nullable for a in self.alts)

    def match(self, s: str, i: int, caps: Caps) -> int:
        for alt in self.alts:
            trial: Caps = {}
            end = alt.match(s, i, trial)
            if end != FAIL:
                caps.update(trial)
                return end
        return FAIL


def opt(p: Pattern | str) -> Alt:
    return Alt(p, Empty())


def partial_suffix(s: str, marker: str) -> int:
    """Length of the longest suffix of `s` that is a proper prefix of `marker` (text to hold back)."""
    k = s.find(marker[0], max(0, len(s) - len(marker) + 1))
    while k >= 0:
        if marker.startswith(s[k:]):
            return len(s) - k
        k = s.find(marker[0], k + 1)
    return 0
