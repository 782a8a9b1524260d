"""The model directory as an engine sees it: tokenizer, EOS ids and the metadata GetModelInfo reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from refworker.config import ConfigError

_DEFAULT_CONTEXT = 32768


@dataclass(frozen=True, slots=True)
class ModelFiles:
    path: Path
    tokenizer: Tokenizer
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    pad_token_id: int | None
    vocab_size: int
    max_context_length: int
    model_type: str
    architectures: tuple[str, ...]
    chat_template: str | None
    # Ids whose text holds "[": a prompt without any cannot contain a directive, so needs no decoding.
    bracket_token_ids: frozenset[int]

    @classmethod
    def load(cls, path: Path, eos_override: tuple[int, ...] | None = None) -> ModelFiles:
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok_config = _read_json(path / "tokenizer_config.json")
        gen_config = _read_json(path / "generation_config.json")
        model_config = _read_json(path / "config.json")

        def token_id(field: str) -> int | None:
            token = tok_config.get(field)
            if isinstance(token, dict):  # AddedToken serialised as {"content": ...}
                token = token.get("content")
            return tokenizer.token_to_id(token) if isinstance(token, str) else None

        eos = eos_override or _ids(gen_config.get("eos_token_id")) or _ids(token_id("eos_token"))
        if not eos:
            raise ConfigError(f"{path}: no EOS id in generation_config.json or tokenizer_config.json")
        bos = _first(gen_config.get("bos_token_id"), model_config.get("bos_token_id"), token_id("bos_token"))
        pad = _first(gen_config.get("pad_token_id"), token_id("pad_token"))
        template = tok_config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        max_len = tok_config.get("model_max_length")
        if not isinstance(max_len, int) or max_len <= 0 or max_len > 2**31 - 1:
            max_len = model_config.get("max_position_embeddings", _DEFAULT_CONTEXT)
        return cls(
            path=path,
            tokenizer=tokenizer,
            eos_token_ids=eos,
            bos_token_id=bos,
            pad_token_id=pad,
            vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
            max_context_length=int(max_len),
            model_type=str(model_config.get("model_type", "")),
            architectures=tuple(model_config.get("architectures") or ()),
            chat_template=template if isinstance(template, str) else None,
            bracket_token_ids=frozenset(
                i
                for piece, i in tokenizer.get_vocab(with_added_tokens=True).items()
                if "[" in piece or piece == "<0x5B>"  # the latter: SentencePiece byte fallback
            ),
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _ids(value: object) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, int))
    return ()


def _first(*values: object) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
