"""Fake, deterministic logprob messages, built for either engine's proto module.

SGLang's and vLLM's ``OutputLogProbs``, ``InputLogProbs``, ``InputTokenLogProb`` and ``TopLogProbs`` have
identical layouts but are distinct message types, so every builder takes the generated module (``pb``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def fake_logprob(position: int) -> float:
    """Deterministic and distinct per position, so tests can check which positions a message covers."""
    return -0.01 * (position % 7) - 0.001


def _top(pb: ModuleType, value: float, token: int, top_n: int, vocab_size: int) -> Any:
    # The chosen token first with the best value, then alternatives strictly below it.
    others = range(1, top_n)
    return pb.TopLogProbs(
        values=[value, *(value - 0.5 * j for j in others)],
        token_ids=[token, *((token + j) % vocab_size for j in others)],
    )


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
