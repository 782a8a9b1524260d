"""Per-request directives: ``[ref key=value ...]`` in the prompt steers one request.

End-to-end tests talk to a worker only through a gateway, so the prompt is the one channel they control.
The worker decodes the prompt's ids and the last ``[ref ...]`` wins (the latest user turn overrides older
ones). Keys:

    script=echo|fixed|tool|think|think_tool|filler   tokens=N (filler length)
    tool=NAME[,NAME...] (the tool script's functions: one call each, in parallel)
    chunk=K|random   ttft_ms=F   itl_ms=F (per token)   seed=N (random chunk sizes)
    fail=STATUS (gRPC status name; the RPC fails before any message)   fail_after=N (INTERNAL after N)
    stall=1 (send the first chunk, then wait for Abort or cancellation)

An unknown key or a bad value rejects the request with INVALID_ARGUMENT naming the key.
In realistic mode (``--realistic``) the batching simulator decides when tokens exist, so ``ttft_ms`` and
``itl_ms`` have no effect there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from refworker.config import SCRIPT_NAMES, ScriptName

_DIRECTIVE = re.compile(r"\[ref(?=[\s\]])([^\]\[]*)\]")
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")

# Canonical gRPC status names (OK excluded: it is not a failure).
STATUS_NAMES = frozenset(
    {
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
KEYS = ("script", "tokens", "tool", "chunk", "ttft_ms", "itl_ms", "fail", "fail_after", "stall", "seed")


class DirectiveError(ValueError):
    """A directive names an unknown key or carries a bad value; the request is rejected."""


@dataclass(frozen=True, slots=True)
class Directives:
    """Overrides for one request; ``None`` keeps the worker's default."""

    script: ScriptName | None = None
    tokens: int | None = None
    tool: str | None = None
    chunk: int | None = None
    random_chunk: bool = False
    ttft_ms: float | None = None
    itl_ms: float | None = None
    fail: str | None = None
    fail_after: int | None = None
    stall: bool = False
    seed: int | None = None


NO_DIRECTIVES = Directives()


def parse_directives(text: str) -> Directives:
    """Directives of the last ``[ref ...]`` in ``text``; ``NO_DIRECTIVES`` when there is none."""
    bodies = _DIRECTIVE.findall(text)
    if not bodies:
        return NO_DIRECTIVES
    values: dict[str, object] = {}
    for item in bodies[-1].split():
        key, sep, value = item.partition("=")
        if not sep:
            raise DirectiveError(f"directive {item!r} is not key=value")
        if key not in KEYS:
            raise DirectiveError(f"unknown directive key {key!r}; known: {', '.join(KEYS)}")
        values.update(_parse_value(key, value))
    return Directives(**values)  # type: ignore[arg-type]


def _parse_value(key: str, value: str) -> dict[str, object]:
    if key == "script":
        if value not in SCRIPT_NAMES:
            raise DirectiveError(f"directive script={value!r}: expected one of {', '.join(SCRIPT_NAMES)}")
        return {"script": value}
    if key == "tool":
        if not all(_TOOL_NAME.fullmatch(name) for name in value.split(",")):
            raise DirectiveError(f"directive tool={value!r}: not a tool name (or comma-separated names)")
        return {"tool": value}
    if key == "chunk":
        if value == "random":
            return {"random_chunk": True}
        return {"chunk": _int(key, value, minimum=1)}
    if key == "fail":
        name = value.upper()
        if name not in STATUS_NAMES:
            raise DirectiveError(f"directive fail={value!r}: not a gRPC status name")
        return {"fail": name}
    if key == "stall":
        if value not in ("0", "1"):
            raise DirectiveError(f"directive stall={value!r}: expected 0 or 1")
        return {"stall": value == "1"}
    if key in ("ttft_ms", "itl_ms"):
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0 <= number <= 3_600_000:
            raise DirectiveError(f"directive {key}={value!r}: expected milliseconds >= 0")
        return {key: number}
    minimum = None if key == "seed" else 0
    return {key: _int(key, value, minimum=minimum)}


def _int(key: str, value: str, minimum: int | None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DirectiveError(f"directive {key}={value!r}: expected an integer") from None
    if minimum is not None and number < minimum:
        raise DirectiveError(f"directive {key}={value!r}: must be >= {minimum}")
    return number
