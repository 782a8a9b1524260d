"""Tokenize and detokenize JSON → typed requests; the shapes of SMG (and vLLM's ``messages``).

``POST /v1/tokenize`` takes ``{model, prompt: str | [str]}`` as SMG does, or ``{model, messages, …}`` as
vLLM does: the conversation is rendered with the model's chat template exactly as a chat completion
would render it (the chat adapter's own parsing), then tokenized.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters import params
from adapters.chat.request import parse_chat
from dataplane.errors import InvalidRequest

CHAT_KEYS = frozenset(
    {"messages", "tools", "chat_template_kwargs", "add_generation_prompt", "continue_final_message"}
)
TOKENIZE_KEYS = CHAT_KEYS | {"model", "prompt", "add_special_tokens", "return_token_strs"}
DETOKENIZE_KEYS = frozenset({"model", "tokens", "skip_special_tokens"})
UNSUPPORTED = {
    "chat_template": "a per-request chat template is not supported; the gateway uses the model's",
    "mm_processor_kwargs": "only text is supported",
}


@dataclass(frozen=True, slots=True)
class ChatInput:
    """A conversation to render with the model's chat template."""

    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...] = ()
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    template_kwargs: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TokenizeRequest:
    model: str
    prompts: tuple[str, ...]  # empty when ``chat`` is given
    batch: bool  # ``prompt`` was a list: every field of the answer is a list
    chat: ChatInput | None
    add_special_tokens: bool
    return_token_strs: bool


@dataclass(frozen=True, slots=True)
class DetokenizeRequest:
    model: str
    sequences: tuple[tuple[int, ...], ...]
    batch: bool
    skip_special_tokens: bool


def parse_tokenize(body: Mapping[str, Any]) -> TokenizeRequest:
    params.reject_unknown(body, TOKENIZE_KEYS, UNSUPPORTED)
    model = params.model_name(body)
    prompt = body.get("prompt")
    has_messages = body.get("messages") is not None
    if (prompt is None) == (not has_messages):
        raise InvalidRequest("exactly one of 'prompt' and 'messages' is required", param="prompt")
    chat = chat_input(body) if has_messages else None
    if chat is None:
        extra = sorted(k for k in CHAT_KEYS if body.get(k) is not None)
        if extra:
            raise InvalidRequest(f"'{extra[0]}' is only allowed with 'messages'", param=extra[0])
    prompts: tuple[str, ...]
    if isinstance(prompt, str):
        prompts, batch = (prompt,), False
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompts, batch = tuple(prompt), True
    elif prompt is None:
        prompts, batch = (), False
    else:
        raise InvalidRequest("'prompt' must be a string or a list of strings", param="prompt")
    return TokenizeRequest(
        model=model,
        prompts=prompts,
        batch=batch,
        chat=chat,
        add_special_tokens=params.get(body, "add_special_tokens", bool, False),
        return_token_strs=params.get(body, "return_token_strs", bool, False),
    )


def chat_input(body: Mapping[str, Any]) -> ChatInput:
    """The conversation in ``body``, parsed and normalised by the chat completions parser."""
    chat = parse_chat({k: body[k] for k in (*CHAT_KEYS, "model") if k in body}, "tokenize", {}).generate
    assert chat.messages is not None
    return ChatInput(
        messages=tuple(dict(m) for m in chat.messages),
        tools=tuple(dict(t) for t in chat.tools),
        add_generation_prompt=chat.add_generation_prompt,
        continue_final_message=chat.continue_final_message,
        template_kwargs=dict(chat.chat_template_kwargs),
    )


def parse_detokenize(body: Mapping[str, Any]) -> DetokenizeRequest:
    params.reject_unknown(body, DETOKENIZE_KEYS, {})
    model = params.model_name(body)
    tokens = body.get("tokens")
    sequences: tuple[tuple[int, ...], ...]
    if isinstance(tokens, list) and all(_is_id(t) for t in tokens):
        sequences, batch = (tuple(tokens),), False
    elif isinstance(tokens, list) and all(
        isinstance(seq, list) and all(_is_id(t) for t in seq) for seq in tokens
    ):
        sequences, batch = tuple(tuple(seq) for seq in tokens), True
    else:
        raise InvalidRequest("'tokens' must be a list of token ids or a list of such lists", param="tokens")
    return DetokenizeRequest(
        model=model,
        sequences=sequences,
        batch=batch,
        skip_special_tokens=params.get(body, "skip_special_tokens", bool, True),
    )


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
