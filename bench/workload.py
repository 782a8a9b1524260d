"""The benchmark's fixed request: one system and one user message, 138 prompt tokens with Qwen3's template.

Both gateways render the same chat template (thinking disabled) over the same tokenizer, so the workers
see identical prompt ids. ``ignore_eos`` makes every response exactly ``max_tokens`` long.
"""

from __future__ import annotations

from typing import Any

SYSTEM = (
    "You are a concise technical assistant for a team that operates large language model "
    "inference gateways. Answer in plain English, prefer short sentences, and never invent facts."
)
USER = (
    "Our gateway routes chat requests to two model workers over gRPC with a round-robin policy. "
    "Explain, in a few paragraphs, how streaming responses travel from the worker through the gateway "
    "to the client, what can add latency before the first token arrives, and which metrics we should "
    "watch to tell a slow gateway from a slow worker. Keep the answer under three hundred words and use "
    "the terms time to first token and inter-token latency where they apply."
)
PROMPT_TOKENS = 138  # with Qwen3's chat template, enable_thinking=False (checked against usage at start)
# --unique-prompts: the user message starts with this tag, its six digits a per-request counter, so a
# gateway cannot serve the user turn's tokens from a cache (the system prompt stays shared, as in life).
UNIQUE_TAG = "Request 000000. "
UNIQUE_TAG_TOKENS = 9  # "Request", " ", six single-digit tokens, "." ("Our" becomes " Our"; checked)


def chat_body(model: str, max_tokens: int, stream: bool, unique: bool = False) -> dict[str, Any]:
    user = UNIQUE_TAG + USER if unique else USER
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "chat_template_kwargs": {"enable_thinking": False},
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def prompt_tokens(unique: bool) -> int:
    return PROMPT_TOKENS + (UNIQUE_TAG_TOKENS if unique else 0)


def split_at_counter(body: bytes) -> tuple[bytes, bytes]:
    """A serialized unique-prompt body as (prefix, suffix) around the six counter digits."""
    start = body.index(UNIQUE_TAG.encode()) + len("Request ")
    return body[:start], body[start + 6 :]
