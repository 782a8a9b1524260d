"""Pieces of OpenAI's response shapes that chat and completions share."""

from __future__ import annotations

from typing import Any

from dataplane.types import Finished, TokenLogprob, Usage


def usage_json(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def chat_logprobs(items: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.raw),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": list(t.raw)} for t in lp.top
                ],
            }
            for lp in items
        ]
    }


def completion_logprobs(items: list[TokenLogprob] | tuple[TokenLogprob, ...], offset: int) -> dict[str, Any]:
    tokens, values, tops, offsets = [], [], [], []
    for lp in items:
        tokens.append(lp.token)
        values.append(lp.logprob)
        tops.append({t.token: t.logprob for t in lp.top})
        offsets.append(offset)
        offset += len(lp.token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def stream_chunk(
    base: dict[str, Any], choice: dict[str, Any], finish: Finished | None, include_usage: bool
) -> dict[str, Any]:
    """One streamed chunk for one choice; ``usage`` is null on every chunk but the last when asked for."""
    choice["finish_reason"] = finish.reason if finish else None
    if finish is not None:
        choice["matched_stop"] = finish.matched_stop
    chunk = {**base, "choices": [choice]}
    if include_usage:
        chunk["usage"] = None
    return chunk
