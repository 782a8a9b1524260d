"""Per-model tokenizer and chat template, loaded from a local directory (never from a hub)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
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
from dataplane.tokenizer_cache import (
    DEFAULT_CACHE,
    OFFLOAD_CHARS,
    OFFLOAD_IDS,
    CacheConfig,
    CachedEncoder,
    executor,
)

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


@dataclass(frozen=True, slots=True)
class ModelTokenizer:
    """A model's tokenizer, chat template, special tokens and EOS ids."""

    tokenizer: Tokenizer
    chat_template: str | None
    special_tokens: Mapping[str, str]
    eos_token_ids: frozenset[int]
    max_context_length: int | None
    source: str
    encoder: CachedEncoder
    byte_decoder: Mapping[str, int] | None = None  # byte-level BPE: vocabulary character -> byte
    id_limit: int = 0  # one past the largest token id
    unused_ids: frozenset[int] = frozenset()  # ids below id_limit that no token has

    @classmethod
    def from_dir(
        cls,
        directory: str | Path,
        *,
        chat_template: str | Path | None = None,
        cache: CacheConfig = DEFAULT_CACHE,
    ) -> ModelTokenizer:
        """Load ``tokenizer.json``, ``tokenizer_config.json`` and optional ``generation_config.json``."""
        root = Path(directory)
        if not (root / "tokenizer.json").is_file():
            raise ConfigError(f"no tokenizer.json in {root} (a local model or tokenizer directory is needed)")
        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        # As transformers does per call: a prompt is never silently truncated, and never padded.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        config = _read_json(root / "tokenizer_config.json")
        generation = _read_json(root / "generation_config.json")
        template = _load_template(root, config, chat_template)
        specials = {k: t for k in _SPECIAL_TOKEN_KEYS if (t := _token_text(config.get(k))) is not None}
        eos = _eos_ids(tokenizer, generation, specials.get("eos_token"))
        max_len = config.get("model_max_length")
        ids = frozenset(tokenizer.get_vocab(with_added_tokens=True).values())
        return cls(
            tokenizer=tokenizer,
            chat_template=template,
            special_tokens=specials,
            eos_token_ids=eos,
            max_context_length=max_len if isinstance(max_len, int) and max_len < 10**9 else None,
            source=str(root),
            encoder=CachedEncoder(tokenizer, cache),
            byte_decoder=_byte_decoder(tokenizer),
            id_limit=max(ids) + 1,
            unused_ids=frozenset(range(max(ids) + 1)) - ids,
        )

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; without added special tokens by default (a template placed them)."""
        return self.encoder.encode(text, add_special_tokens)

    async def encode_async(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """``encode``, with long uncached text tokenized off the event loop."""
        return await self.encoder.encode_async(text, add_special_tokens)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    async def decode_async(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """``decode`` of ids checked against the vocabulary, long sequences off the event loop."""
        self.check_ids(ids, param="tokens")
        if len(ids) <= OFFLOAD_IDS:
            return self.decode(ids, skip_special_tokens=skip_special_tokens)
        batch = self.tokenizer.decode_batch  # releases the GIL, unlike decode
        texts = await asyncio.get_running_loop().run_in_executor(
            executor(), functools.partial(batch, [list(ids)], skip_special_tokens=skip_special_tokens)
        )
        return str(texts[0])

    def check_ids(self, ids: Sequence[int], *, param: str) -> None:
        """Raise ``InvalidRequest`` for an id the vocabulary does not have."""
        limit, unused = self.id_limit, self.unused_ids
        if ids and (min(ids) < 0 or max(ids) >= limit or not unused.isdisjoint(ids)):
            bad = next(i for i in ids if not 0 <= i < limit or i in unused)
            raise InvalidRequest(
                f"token id {bad} is not in the vocabulary of this model (ids 0..{limit - 1})", param=param
            )

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

    async def render_chat_async(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """``render_chat``; a long conversation is rendered on a worker thread (Jinja holds the GIL, but
        the event loop then gets it back at every switch interval instead of waiting for the end)."""
        render = functools.partial(
            self.render_chat,
            messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            template_kwargs=template_kwargs,
        )
        size = sum(len(str(m.get("content") or "")) for m in messages)
        if size <= OFFLOAD_CHARS:
            return render()
        return await asyncio.get_running_loop().run_in_executor(executor(), render)


@functools.lru_cache(maxsize=16)
def load_tokenizer(
    directory: str, chat_template: str | None = None, cache: CacheConfig = DEFAULT_CACHE
) -> ModelTokenizer:
    """``ModelTokenizer.from_dir``, once per directory, template and cache configuration (the result is
    immutable; its caches are shared by whoever loads the same)."""
    return ModelTokenizer.from_dir(directory, chat_template=chat_template, cache=cache)


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
