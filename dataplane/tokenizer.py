"""Per-model tokenizer and chat template, loaded from a local directory (never from a hub)."""

from __future__ import annotations

import functools
import json
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders

# Only transformers' chat-template renderer is used; its "PyTorch was not found" advice is noise here.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.utils.chat_template_utils import render_jinja_template

from dataplane.errors import ConfigError, InvalidRequest

_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _token_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


class PieceCache:
    """Tokenize text as the tokenizer itself does, piece by piece, remembering recent pieces.

    ``tokenizers`` first splits the input on its added tokens (``<|im_start|>``, ``<think>``, …) and then
    tokenizes each piece between them on its own; so ``encode(text)`` equals the concatenation of the
    pieces' encodings. Chat prompts repeat most of their pieces (system prompt, tool list, earlier turns),
    and a piece seen before costs a dict lookup instead of a BPE pass. Bounded by entries and characters.
    Only built when that split is exact: every added token un-normalized, with no strip/single-word rule.
    """

    def __init__(self, tokenizer: Tokenizer, *, max_entries: int = 8192, max_chars: int = 8_000_000) -> None:
        added = tokenizer.get_added_tokens_decoder()
        self._tokenizer = tokenizer
        self._ids = {t.content: i for i, t in added.items()}
        alternatives = "|".join(re.escape(t) for t in sorted(self._ids, key=len, reverse=True))
        self._split = re.compile(f"({alternatives})") if alternatives else None
        self._pieces: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._chars = 0
        self._max_entries = max_entries
        self._max_chars = max_chars

    @staticmethod
    def exact_for(tokenizer: Tokenizer) -> bool:
        return all(
            not (t.normalized or t.lstrip or t.rstrip or t.single_word)
            for t in tokenizer.get_added_tokens_decoder().values()
        )

    def encode(self, text: str) -> list[int]:
        parts = self._split.split(text) if self._split is not None else [text]
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:  # the split's capture group: an added token
                ids.append(self._ids[part])
            elif part:
                ids.extend(self._piece(part))
        return ids

    def _piece(self, piece: str) -> tuple[int, ...]:
        cached = self._pieces.get(piece)
        if cached is not None:
            self._pieces.move_to_end(piece)
            return cached
        ids = tuple(self._tokenizer.encode(piece, add_special_tokens=False).ids)
        if len(piece) <= self._max_chars // 4:
            self._pieces[piece] = ids
            self._chars += len(piece)
            while len(self._pieces) > self._max_entries or self._chars > self._max_chars:
                evicted, _ = self._pieces.popitem(last=False)
                self._chars -= len(evicted)
        return ids


@dataclass(frozen=True, slots=True)
class ModelTokenizer:
    """A model's tokenizer, chat template, special tokens and EOS ids."""

    tokenizer: Tokenizer
    chat_template: str | None
    special_tokens: Mapping[str, str]
    eos_token_ids: frozenset[int]
    max_context_length: int | None
    source: str
    byte_decoder: Mapping[str, int] | None = None  # byte-level BPE: vocabulary character -> byte
    pieces: PieceCache | None = None

    @classmethod
    def from_dir(cls, directory: str | Path, *, chat_template: str | Path | None = None) -> ModelTokenizer:
        """Load ``tokenizer.json``, ``tokenizer_config.json`` and optional ``generation_config.json``."""
        root = Path(directory)
        if not (root / "tokenizer.json").is_file():
            raise ConfigError(f"no tokenizer.json in {root} (a local model or tokenizer directory is needed)")
        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        config = _read_json(root / "tokenizer_config.json")
        generation = _read_json(root / "generation_config.json")
        template = _load_template(root, config, chat_template)
        specials = {k: t for k in _SPECIAL_TOKEN_KEYS if (t := _token_text(config.get(k))) is not None}
        eos = _eos_ids(tokenizer, generation, specials.get("eos_token"))
        max_len = config.get("model_max_length")
        return cls(
            tokenizer=tokenizer,
            chat_template=template,
            special_tokens=specials,
            eos_token_ids=eos,
            max_context_length=max_len if isinstance(max_len, int) and max_len < 10**9 else None,
            source=str(root),
            byte_decoder=_byte_decoder(tokenizer),
            pieces=PieceCache(tokenizer) if PieceCache.exact_for(tokenizer) else None,
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without added special tokens (the template already placed them)."""
        if self.pieces is not None:
            return self.pieces.encode(text)
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes one token stands for, even when it holds only part of a UTF-8 character."""
        piece = self.tokenizer.id_to_token(token_id)
        table = self.byte_decoder
        if piece is not None and table is not None and all(c in table for c in piece):
            return bytes(table[c] for c in piece)
        return self.decode([token_id], skip_special_tokens=False).encode()

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """Render with ``transformers``' chat-template semantics (sandbox, ``tojson``, raise_exception)."""
        if self.chat_template is None:
            raise InvalidRequest(
                "this model has no chat template; pass --chat-template or use /v1/completions"
            )
        render: Any = render_jinja_template  # its annotations are narrower than what it accepts
        kwargs = {**self.special_tokens, **(template_kwargs or {})}
        try:
            rendered, _ = render(
                conversations=[list(messages)],
                tools=list(tools) or None,
                chat_template=self.chat_template,
                add_generation_prompt=add_generation_prompt and not continue_final_message,
                continue_final_message=continue_final_message,
                **kwargs,
            )
        except Exception as exc:  # template errors are the client's (bad roles, raise_exception, ...)
            raise InvalidRequest(f"chat template error: {exc}", param="messages") from exc
        return str(rendered[0])


@functools.lru_cache(maxsize=16)
def load_tokenizer(directory: str, chat_template: str | None = None) -> ModelTokenizer:
    """``ModelTokenizer.from_dir``, once per directory and template (the result is immutable)."""
    return ModelTokenizer.from_dir(directory, chat_template=chat_template)


def _load_template(root: Path, config: Mapping[str, Any], override: str | Path | None) -> str | None:
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise ConfigError(f"chat template file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        # A .json override may carry {"chat_template": "..."} like tokenizer_config.json does.
        return str(json.loads(text)["chat_template"]) if path.suffix == ".json" else text
    if (root / "chat_template.jinja").is_file():
        return (root / "chat_template.jinja").read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: pick "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _byte_decoder(tokenizer: Tokenizer) -> dict[str, int] | None:
    if not isinstance(tokenizer.decoder, decoders.ByteLevel):
        return None
    byte_to_char: dict[int, str] = bytes_to_unicode()  # type: ignore[no-untyped-call]
    return {char: byte for byte, char in byte_to_char.items()}


def _eos_ids(tokenizer: Tokenizer, generation: Mapping[str, Any], eos_token: str | None) -> frozenset[int]:
    raw = generation.get("eos_token_id")
    if isinstance(raw, int):
        return frozenset({raw})
    if isinstance(raw, list) and all(isinstance(i, int) for i in raw):
        return frozenset(raw)
    if eos_token is not None and (token_id := tokenizer.token_to_id(eos_token)) is not None:
        return frozenset({token_id})
    return frozenset()
