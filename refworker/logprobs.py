"""Fake, deterministic logprob messages, built for the engine's proto module.

SGLang's and vLLM's ``OutputLogProbs``, ``InputLogProbs``, ``InputTokenLogProb`` and ``TopLogProbs`` have
identical layouts but are distinct message types, so every builder takes the generated module (``pb``).
TensorRT-LLM's are per token instead (``TokenLogprob`` with its ``TopLogprob`` list): ``token_logprobs``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def fake_logprob(position: int) -> float:
    """Deterministic and distinct per position, so tests can check which positions a message covers."""
    return -0.01 * (position % 7) - 0.001


def _ranked(value: float, token: int, alternatives: int, vocab_size: int) -> tuple[list[float], list[int]]:
    """The chosen token first with the best value, then ``alternatives`` others strictly below it."""
    others = range(1, alternatives + 1)
    return [value, *(value - 0.5 * j for j in others)], [token, *((token + j) % vocab_size for j in others)]


def _top(pb: ModuleType, value: float, token: int, top_n: int, vocab_size: int) -> Any:
    values, tokens = _ranked(value, token, top_n - 1, vocab_size)  # the chosen token counts among top_n
    return pb.TopLogProbs(values=values, token_ids=tokens)


def output_logprobs(pb: ModuleType, ids: list[int], start: int, end: int, top_n: int, vocab_size: int) -> Any:
    """Logprobs of ``ids[start:end]``; ``top_n`` alternatives each (the chosen token first), none if 0."""
    values = [fake_logprob(p) for p in range(start, end)]
    tokens = ids[start:end]
    tops = (
        [_top(pb, v, t, top_n, vocab_size) for v, t in zip(values, tokens, strict=True)] if top_n > 0 else []
    )
    return pb.OutputLogProbs(token_logprobs=values, token_ids=tokens, top_logprobs=tops)


def input_logprobs(pb: ModuleType, prompt_ids: list[int], start: int, top_n: int, vocab_size: int) -> Any:
    """Logprobs of the prompt from position ``start`` on."""
    positions = range(start, len(prompt_ids))
    # Position 0 has no logprob (nothing precedes it), which the proto marks by leaving `value` unset.
    values = [pb.InputTokenLogProb(value=fake_logprob(p)) if p else pb.InputTokenLogProb() for p in positions]
    tops = (
        [_top(pb, fake_logprob(p), prompt_ids[p], top_n, vocab_size) for p in positions] if top_n > 0 else []
    )
    return pb.InputLogProbs(token_logprobs=values, token_ids=prompt_ids[start:], top_logprobs=tops)


def token_logprobs(
    pb: ModuleType, ids: list[int], start: int, end: int, alternatives: int, vocab_size: int
) -> list[Any]:
    """TensorRT-LLM's ``TokenLogprob`` per token of ``ids[start:end]``; its ``top_logprobs`` hold the chosen
    token first, then ``alternatives`` others (none at all if 0)."""
    out = []
    for position in range(start, end):
        token = ids[position]
        value = fake_logprob(position)
        message = pb.TokenLogprob(token_id=token, logprob=value)
        if alternatives > 0:
            values, tokens = _ranked(value, token, alternatives, vocab_size)
            top = message.top_logprobs
            for top_value, top_token in zip(values, tokens, strict=True):
                top.add(token_id=top_token, logprob=top_value)
        out.append(message)
    return out
