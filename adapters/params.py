"""Typed reads of an OpenAI JSON body with clear 400s, and the sampling parameters both APIs share."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

import orjson

from dataplane.errors import InvalidRequest, UnsupportedParameter
from dataplane.types import SamplingParams

T = TypeVar("T")
MAX_N = 10

# Parameters every generation API accepts, on top of its own.
SAMPLING_KEYS = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "seed",
        "n",
        "stop",
        "stop_token_ids",
        "ignore_eos",
        "skip_special_tokens",
        "no_stop_trim",
        "min_tokens",
        "logit_bias",
        "user",
    }
)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: Collection[str], unsupported: Mapping[str, str]) -> None:
    """Every key is either used or refused; nothing is silently ignored."""
    for key, value in body.items():
        if key in unsupported and value is not None:
            raise UnsupportedParameter(f"'{key}' is not supported: {unsupported[key]}", param=key)
        if key not in allowed and key not in unsupported:
            raise UnsupportedParameter(f"unrecognized request argument: '{key}'", param=key)


_TYPE_NAMES = {str: "a string", bool: "a boolean", dict: "an object", list: "an array"}


def get(body: Mapping[str, Any], key: str, kind: type[T], default: T) -> T:
    """``body[key]`` when present and of ``kind`` (``str``, ``bool``, ``dict`` or ``list``), else 400."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidRequest(f"'{key}' must be {_TYPE_NAMES.get(kind, kind.__name__)}", param=key)
    return value


def number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{key}' must be a number", param=key)
    if not lo <= value <= hi:
        raise InvalidRequest(f"'{key}' must be between {lo} and {hi}, got {value}", param=key)
    return float(value)


def integer(body: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{key}' must be an integer", param=key)
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise InvalidRequest(f"'{key}' must be {bound}, got {value}", param=key)
    return int(value)


def stops(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value) and len(value) <= 16:
        return tuple(s for s in value if s)
    raise InvalidRequest("'stop' must be a string or a list of at most 16 strings", param="stop")


def token_ids(body: Mapping[str, Any], key: str) -> tuple[int, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value
    ):
        return tuple(value)
    raise InvalidRequest(f"'{key}' must be a list of non-negative integers", param=key)


def logit_bias(body: Mapping[str, Any]) -> dict[str, float]:
    value = get(body, "logit_bias", dict, {})
    for token, bias in value.items():
        if not str(token).isdigit() or not isinstance(bias, int | float) or not -100 <= bias <= 100:
            raise InvalidRequest(
                "'logit_bias' maps token ids to numbers between -100 and 100", param="logit_bias"
            )
    return {str(k): float(v) for k, v in value.items()}


def include_usage(body: Mapping[str, Any]) -> bool:
    options = get(body, "stream_options", dict, {})
    if options and not get(body, "stream", bool, False):
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    for key, value in options.items():
        if key == "continuous_usage_stats" and value:
            raise UnsupportedParameter("stream option 'continuous_usage_stats' is not supported", param=key)
        if key not in ("include_usage", "continuous_usage_stats"):
            raise UnsupportedParameter(f"unrecognized stream option: '{key}'", param="stream_options")
    return bool(get(options, "include_usage", bool, False))


def sampling(
    body: Mapping[str, Any], *, max_tokens: int | None, logprobs: bool, top_logprobs: int
) -> SamplingParams:
    top_k = integer(body, "top_k", -1)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=number(body, "temperature", 0.0, 2.0),
        top_p=number(body, "top_p", 0.0, 1.0),
        top_k=None if top_k in (None, 0) else top_k,
        min_p=number(body, "min_p", 0.0, 1.0),
        frequency_penalty=number(body, "frequency_penalty", -2.0, 2.0) or 0.0,
        presence_penalty=number(body, "presence_penalty", -2.0, 2.0) or 0.0,
        repetition_penalty=number(body, "repetition_penalty", 0.0, 2.0),
        min_tokens=integer(body, "min_tokens", 0) or 0,
        seed=integer(body, "seed", -(2**63), 2**64 - 1),
        n=integer(body, "n", 1, MAX_N) or 1,
        stop=stops(body),
        stop_token_ids=token_ids(body, "stop_token_ids"),
        ignore_eos=get(body, "ignore_eos", bool, False),
        skip_special_tokens=get(body, "skip_special_tokens", bool, True),
        no_stop_trim=get(body, "no_stop_trim", bool, False),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        logit_bias=logit_bias(body),
    )


def model_name(body: Mapping[str, Any]) -> str:
    model = get(body, "model", str, "")
    if not model:
        raise InvalidRequest("'model' is required", param="model")
    return model
