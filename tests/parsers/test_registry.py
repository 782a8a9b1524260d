"""Parser selection by name and by model name (SMG's tables), and the public API."""

from __future__ import annotations

import pytest

import parsers
from parsers import (
    REASONING_PARSER_NAMES,
    TOOL_PARSER_NAMES,
    make_reasoning_parser,
    make_tool_parser,
    reasoning_parser_name_for_model,
    tool_parser_name_for_model,
)
from parsers.registry import REASONING, TOOLS


@pytest.mark.parametrize(
    ("model", "parser"),
    [
        ("Qwen/Qwen3-0.6B", "qwen"),
        ("Qwen2.5-7B-Instruct", "qwen"),
        ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen_xml"),
        ("qwen/qwen3.5-35b", "qwen_xml"),
        ("meta-llama/Llama-3.2-3B-Instruct", "llama"),
        ("meta-llama/Llama-3.1-8B-Instruct", "json"),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "pythonic"),
        ("deepseek-ai/DeepSeek-V3-0324", "deepseek"),
        ("deepseek-ai/DeepSeek-V3.1", "deepseek31"),
        ("deepseek-ai/DeepSeek-V3.2-Exp", "deepseek31"),
        ("deepseek-ai/DeepSeek-V3.2", "deepseek32"),
        ("deepseek-ai/DeepSeek-V4-Flash", "deepseek_v4"),
        ("deepseek-ai/DeepSeek-R1", "pythonic"),
        ("zai-org/GLM-4.5-Air", "glm45"),
        ("zai-org/GLM-4.6", "glm45"),
        ("zai-org/GLM-4.7", "glm47"),
        ("glm-5-fp8", "glm47"),
        ("glm-4-9b", "json"),
        ("moonshotai/Kimi-K2-Instruct", "kimik2"),
        ("MiniMaxAI/MiniMax-M2", "minimax_m2"),
        ("stepfun-ai/step3", "step3"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
        ("mixtral-8x7b", "mistral"),
        ("CohereForAI/c4ai-command-r-plus", "cohere"),
        ("command-a-03-2025", "cohere"),
        ("gpt-4o", "json"),
        ("claude-3-5-sonnet", "json"),
        ("gemma-2-9b", "json"),
        ("some/unknown-model", "passthrough"),
    ],
)
def test_tool_parser_for_model(model: str, parser: str) -> None:
    assert tool_parser_name_for_model(model) == parser


@pytest.mark.parametrize(
    ("model", "parser"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek_r1"),
        ("deepseek-ai/DeepSeek-V3.1", "deepseek_v31"),
        ("Qwen/Qwen3-0.6B", "qwen3"),
        ("qwen3-thinking-2507", "qwen3_thinking"),
        ("zai-org/GLM-4.5", "glm45"),
        ("glm-5.2-fp8", "glm45"),
        ("moonshotai/Kimi-K2-Thinking", "kimi_thinking"),
        ("moonshotai/Kimi-K2.5", "kimi_k25"),
        ("moonshotai/Kimi-K2-Instruct", "kimi"),
        ("stepfun-ai/step3", "step3"),
        ("MiniMaxAI/MiniMax-M2", "minimax"),
        ("mm-m2-chat", "minimax"),
        ("CohereLabs/command-a-reasoning", "cohere_cmd"),
        ("nvidia/NVIDIA-Nemotron-Nano-9B-v2", "nano_v3"),
        ("meta-llama/Llama-3.1-8B-Instruct", "passthrough"),
    ],
)
def test_reasoning_parser_for_model(model: str, parser: str) -> None:
    assert reasoning_parser_name_for_model(model) == parser


def test_every_pattern_names_a_parser() -> None:
    assert set(TOOLS.patterns.values()) <= set(TOOL_PARSER_NAMES)
    assert set(REASONING.patterns.values()) <= set(REASONING_PARSER_NAMES)
    assert all(stem == stem.lower() for stem in (*TOOLS.patterns, *REASONING.patterns))


def test_required_tool_parsers() -> None:
    required = {"json", "qwen", "qwen_xml", "llama", "pythonic", "mistral", "deepseek", "deepseek31", "glm45",
                "glm47", "kimik2", "minimax_m2", "step3", "cohere", "passthrough"}  # fmt: skip
    assert required <= set(TOOL_PARSER_NAMES)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown tool parser 'hermes2'.*qwen_xml"):
        make_tool_parser("hermes2")
    with pytest.raises(ValueError, match=r"unknown reasoning parser 'r1'.*deepseek_r1"):
        make_reasoning_parser("r1")


def test_parsers_are_fresh_per_request() -> None:
    first, second = make_tool_parser("qwen"), make_tool_parser("qwen")
    assert first is not second
    first.feed("<tool_call>")
    assert second.feed("plain").normal_text == "plain"


def test_public_api_is_complete() -> None:
    public = {n for n in vars(parsers) if not n.startswith("_")} - {"registry", "types", "tools", "reasoning"}
    assert public == set(parsers.__all__)
    assert all(getattr(parsers, n) is not None for n in parsers.__all__)
