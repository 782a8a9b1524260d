"""OpenAI Completions JSON → one ``GenerateRequest`` per prompt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

from adapters import params
from adapters.chat.request import sglang_constraints
from dataplane.errors import InvalidRequest
from dataplane.types import Constraint, GenerateRequest

ALLOWED = params.SAMPLING_KEYS | {"prompt", "max_tokens", "logprobs", "echo", "regex", "ebnf", "json_schema"}
UNSUPPORTED = {
    "suffix": "suffix (fill-in-the-middle) is not supported",
    "best_of": "best_of is not supported",
}
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
MAX_BATCH = 64


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    prompts: tuple[GenerateRequest, ...]
    prompt_texts: tuple[str | None, ...]
    echo: bool
    include_usage: bool


def parse_completion(
    body: Mapping[str, Any],
    request_id: str,
    trace: Mapping[str, str],
    *,
    routing_key: str | None = None,
    target_worker: str | None = None,
) -> CompletionRequest:
    params.reject_unknown(body, ALLOWED, UNSUPPORTED)
    top = params.integer(body, "logprobs", 0, 5)
    max_tokens = params.integer(body, "max_tokens", 0)
    base = GenerateRequest(
        request_id=request_id,
        model=params.model_name(body),
        sampling=params.sampling(
            body,
            max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            logprobs=top is not None,
            top_logprobs=top or 0,
        ),
        stream=params.get(body, "stream", bool, False),
        constraint=_constraint(body),
        trace_carrier=trace,
        routing_key=routing_key,
        target_worker=target_worker,
    )
    if base.sampling.max_tokens == 0:
        raise InvalidRequest("'max_tokens' must be at least 1", param="max_tokens")
    prompts = _prompts(body.get("prompt"))
    requests = tuple(
        replace(
            base,
            request_id=request_id if len(prompts) == 1 else f"{request_id}-{i}",
            prompt=p if isinstance(p, str) else None,
            prompt_ids=tuple(p) if isinstance(p, list) else None,
        )
        for i, p in enumerate(prompts)
    )
    return CompletionRequest(
        prompts=requests,
        prompt_texts=tuple(p if isinstance(p, str) else None for p in prompts),
        echo=params.get(body, "echo", bool, False),
        include_usage=params.include_usage(body),
    )


def _is_ids(value: object) -> TypeGuard[list[int]]:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    )


def _prompts(prompt: object) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list):
        items: list[object] = prompt
        if _is_ids(items):
            return [items]
        if 0 < len(items) <= MAX_BATCH and all(isinstance(p, str) for p in items):
            return [str(p) for p in items]
        if 0 < len(items) <= MAX_BATCH and all(_is_ids(p) for p in items):
            return [p for p in items if _is_ids(p)]
    raise InvalidRequest(
        f"'prompt' must be a string, a list of token ids, or a list (at most {MAX_BATCH}) of either",
        param="prompt",
    )


def _constraint(body: Mapping[str, Any]) -> Constraint | None:
    """SGLang's ``regex``, ``ebnf`` or ``json_schema`` (the schema's JSON text): one at most (SMG)."""
    found = sglang_constraints(body, ("regex", "ebnf", "json_schema"))
    if len(found) > 1:
        raise InvalidRequest(
            "only one structured output constraint (regex, ebnf, or json_schema) can be active at a time",
            param="regex",
        )
    return found[0] if found else None
