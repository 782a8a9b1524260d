"""Parser selection as data: name -> factory, model-name pattern -> name.

A pattern is a lower-case stem matched as a substring of the lower-cased model name (SMG's `qwen*`
without its `*`); the longest matching stem wins, no match means `passthrough`. An unknown parser name
raises ValueError listing the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from parsers.reasoning import REASONING_FORMATS, PassthroughReasoning, ThinkFormat, ThinkParser
from parsers.tools.jsoncalls import (
    CohereParser,
    DeepSeek31Parser,
    DeepSeekParser,
    JsonParser,
    KimiK2Parser,
    LlamaParser,
    MistralParser,
    QwenParser,
)
from parsers.tools.passthrough import PassthroughParser
from parsers.tools.pythonic import PythonicParser
from parsers.tools.xmlcalls import (
    DeepSeekDsmlParser,
    DeepSeekV4Parser,
    Glm4MoeParser,
    MinimaxM2Parser,
    QwenXmlParser,
    Step3Parser,
)
from parsers.types import ReasoningParser, Tool, ToolParser

F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class Registry(Generic[F]):
    kind: str
    factories: Mapping[str, F]
    patterns: Mapping[str, str]
    default: str = "passthrough"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.factories))

    def factory(self, name: str) -> F:
        try:
            return self.factories[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} parser {name!r}; known: {', '.join(self.names)}") from None

    def name_for_model(self, model: str) -> str:
        lower = model.lower()
        stem = max((s for s in self.patterns if s in lower), key=len, default=None)
        return self.default if stem is None else self.patterns[stem]


ToolFactory = Callable[[Iterable[Tool] | None], ToolParser]
ReasoningFactory = Callable[[bool | None], ReasoningParser]


def _think(fmt: ThinkFormat) -> ReasoningFactory:
    return lambda starts_in_reasoning: ThinkParser(fmt, starts_in_reasoning)


TOOLS: Registry[ToolFactory] = Registry(
    "tool",
    {
        "passthrough": PassthroughParser,
        "json": JsonParser,
        "qwen": QwenParser,
        "qwen_xml": QwenXmlParser,
        "qwen_coder": QwenXmlParser,
        "llama": LlamaParser,
        "pythonic": PythonicParser,
        "mistral": MistralParser,
        "deepseek": DeepSeekParser,
        "deepseek31": DeepSeek31Parser,
        "deepseek32": DeepSeekDsmlParser,
        "deepseek_v4": DeepSeekV4Parser,
        "glm45": Glm4MoeParser,
        "glm45_moe": Glm4MoeParser,
        "glm47": Glm4MoeParser,
        "glm47_moe": Glm4MoeParser,
        "kimik2": KimiK2Parser,
        "minimax_m2": MinimaxM2Parser,
        "step3": Step3Parser,
        "cohere": CohereParser,
    },
    # SMG's tool_parser factory table (smg-behavior.md §7); stems that differ only in case are merged.
    {
        "gpt-4": "json",
        "gpt-3.5": "json",
        "claude-": "json",
        "gemini-": "json",
        "palm-": "json",
        "gemma-": "json",
        "mistral-": "mistral",
        "mixtral-": "mistral",
        "qwen": "qwen",
        "qwen3-coder": "qwen_xml",
        "qwen3.5": "qwen_xml",
        "llama-": "json",
        "meta-llama-": "json",
        "llama-3.2": "llama",
        "meta-llama-3.2": "llama",
        "llama-4": "pythonic",
        "meta-llama-4": "pythonic",
        "deepseek-": "pythonic",
        "deepseek-v3": "deepseek",
        "deepseek-ai/deepseek-v3": "deepseek",
        "deepseek-v3.1": "deepseek31",
        "deepseek-ai/deepseek-v3.1": "deepseek31",
        "deepseek-v3.2-exp": "deepseek31",
        "deepseek-ai/deepseek-v3.2-exp": "deepseek31",
        "deepseek-v3.2": "deepseek32",
        "deepseek-ai/deepseek-v3.2": "deepseek32",
        "deepseek-v4": "deepseek_v4",
        "deepseek-ai/deepseek-v4": "deepseek_v4",
        "glm-": "json",
        "glm-4.5": "glm45",
        "glm-4.6": "glm45",
        "glm-4.7": "glm47",
        "glm-5": "glm47",
        "step3": "step3",
        "step-3": "step3",
        "kimi-k2": "kimik2",
        "minimax": "minimax_m2",
        "command-r": "cohere",
        "command-a": "cohere",
        "c4ai-command": "cohere",
        "cohere": "cohere",
    },
)

REASONING: Registry[ReasoningFactory] = Registry(
    "reasoning",
    {
        "passthrough": PassthroughReasoning,
        **{name: _think(fmt) for name, fmt in REASONING_FORMATS.items()},
    },
    # SMG's reasoning_parser factory patterns (smg-behavior.md §8), plus the GLM-4.x model names.
    {
        "deepseek-r1": "deepseek_r1",
        "deepseek-v3.1": "deepseek_v31",
        "deepseek-v3-1": "deepseek_v31",
        "qwen3-thinking": "qwen3_thinking",
        "qwen-thinking": "qwen3_thinking",
        "qwen3": "qwen3",
        "qwen": "qwen3",
        "glm45": "glm45",
        "glm47": "glm45",
        "glm-4.5": "glm45",
        "glm-4.6": "glm45",
        "glm-4.7": "glm45",
        "glm-5": "glm45",
        "kimi-k2-thinking": "kimi_thinking",
        "kimi-k2.5": "kimi_k25",
        "kimi": "kimi",
        "step3": "step3",
        "minimax": "minimax",
        "mm-m2": "minimax",
        "command-r": "cohere_cmd",
        "command-a": "cohere_cmd",
        "c4ai-command": "cohere_cmd",
        "cohere": "cohere_cmd",
        "nemotron-nano": "nano_v3",
        "nemotron-super": "nano_v3",
        "nano-v3": "nano_v3",
    },
)

TOOL_PARSER_NAMES = TOOLS.names
REASONING_PARSER_NAMES = REASONING.names


def make_tool_parser(name: str, tools: Iterable[Tool] | None = None) -> ToolParser:
    """A fresh tool parser; with `tools`, only their names are calls and their schemas type XML values."""
    return TOOLS.factory(name)(None if tools is None else list(tools))


def make_reasoning_parser(name: str, starts_in_reasoning: bool | None = None) -> ReasoningParser:
    """A fresh reasoning parser; `starts_in_reasoning` None means the family's default (True for models
    that always think, e.g. deepseek_r1); True when the chat template opened the block (enable_thinking)."""
    return REASONING.factory(name)(starts_in_reasoning)


def tool_parser_name_for_model(model: str) -> str:
    return TOOLS.name_for_model(model)


def reasoning_parser_name_for_model(model: str) -> str:
    return REASONING.name_for_model(model)
