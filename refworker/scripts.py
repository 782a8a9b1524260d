"""Scripted outputs: fixed texts tokenized once, so a request only slices precomputed id lists."""

from __future__ import annotations

from tokenizers import Tokenizer

from refworker.config import ScriptName

# Multi-byte characters on purpose: real BPE splits some of them across tokens (the robot emoji is three).
FIXED_TEXT = "Hello! 你好，世界。I am a reference worker 🤖🚀 — ünïcödé ok."
THINK_TEXT = "<think>\nThe user wants a greeting. 先想一想。\n</think>\n\nHello! 你好 👋"
THINK_TOOL_TEXT = "<think>\nThe user wants the weather: call the tool.\n</think>\n\nLet me check.\n"
DEFAULT_TOOL = "get_weather"
# A leading space keeps every cycle tokenized the same, so N filler ids decode to N/10 whole sentences.
FILLER_TEXT = " The quick brown fox jumps over the lazy dog."


def tool_text(name: str) -> str:
    return (
        f'<tool_call>\n{{"name": "{name}", "arguments": {{"city": "Paris", "unit": "celsius"}}}}\n'
        "</tool_call>"
    )


def script_text(name: ScriptName, tool: str = DEFAULT_TOOL, filler_tokens: int = 0) -> str:
    """The text a script decodes to (echo has none of its own: it repeats the prompt)."""
    if name == "fixed":
        return FIXED_TEXT
    if name == "think":
        return THINK_TEXT
    if name == "tool":
        return "\n".join(tool_text(function) for function in tool.split(","))
    if name == "think_tool":
        return THINK_TOOL_TEXT + script_text("tool", tool)
    if name == "filler":
        raise ValueError("filler text depends on the tokenizer; decode ScriptBook.filler(n)")
    raise ValueError(f"script {name!r} has no text of its own")


class ScriptBook:
    """Token ids of every script, computed on first use and cached."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[tuple[str, str], list[int]] = {}
        self._filler_unit = self._encode(FILLER_TEXT)
        self._filler: list[int] = []

    def ids(self, name: ScriptName, prompt_ids: list[int], tool: str, filler_tokens: int) -> list[int]:
        """The script's ids before EOS; callers must not mutate the returned list."""
        if name == "echo":
            return prompt_ids
        if name == "filler":
            return self.filler(filler_tokens)
        key = (name, tool if name in ("tool", "think_tool") else "")
        ids = self._cache.get(key)
        if ids is None:
            if len(self._cache) > 1024:  # tool names come from requests: keep the cache bounded
                self._cache.clear()
            ids = self._cache[key] = self._encode(script_text(name, tool))
        return ids

    def filler(self, count: int) -> list[int]:
        """Exactly ``count`` filler ids (a prefix of one long cycled list)."""
        if count > len(self._filler):
            unit = self._filler_unit
            self._filler = unit * (max(count, 4096) // len(unit) + 1)
        return self._filler[:count]

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
