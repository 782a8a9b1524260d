"""``POST /v1/tokenize``, ``POST /v1/detokenize``, ``GET /v1/tokenizers[/{name}]``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from adapters.context import GATEWAY
from adapters.params import parse_body
from adapters.tokenize.request import parse_detokenize, parse_tokenize
from adapters.tokenize.service import Tokenized, token_strs, tokenize
from dataplane.errors import ModelNotFound
from dataplane.gateway import Model


def _json(payload: object) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


async def tokenize_route(request: web.Request) -> web.Response:
    parsed = parse_tokenize(parse_body(await request.read()))
    tok = request.app[GATEWAY].tokenizer(parsed.model)
    inputs = [None] if parsed.chat is not None else parsed.prompts
    specials = parsed.add_special_tokens
    done: list[Tokenized] = [
        await tokenize(tok, text, parsed.chat, add_special_tokens=specials) for text in inputs
    ]
    body: dict[str, Any] = {
        "tokens": [d.ids for d in done],
        "count": [len(d.ids) for d in done],
        "char_count": [len(d.text) for d in done],
    }
    if parsed.return_token_strs:
        body["token_strs"] = [token_strs(tok, d.ids) for d in done]
    if not parsed.batch:
        body = {key: value[0] for key, value in body.items()}
    if parsed.chat is not None:
        body["max_model_len"] = tok.max_context_length
    return _json(body)


async def detokenize_route(request: web.Request) -> web.Response:
    parsed = parse_detokenize(parse_body(await request.read()))
    tok = request.app[GATEWAY].tokenizer(parsed.model)
    skip = parsed.skip_special_tokens
    texts = [await tok.decode_async(ids, skip_special_tokens=skip) for ids in parsed.sequences]
    return _json({"text": texts if parsed.batch else texts[0]})


async def list_tokenizers(request: web.Request) -> web.Response:
    models = [m for m in request.app[GATEWAY].models() if m.tokenizer is not None]
    return _json({"tokenizers": [describe(m) for m in models]})


async def get_tokenizer(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    model = request.app[GATEWAY].model(name)
    if model.tokenizer is None:
        raise ModelNotFound(f"model {model.id!r} is served by HTTP workers: the gateway has no tokenizer")
    return _json(describe(model))


def describe(model: Model) -> Mapping[str, Any]:
    """A model's tokenizer as SMG lists it (the model name as id and name), with its cache counters."""
    tok = model.tokenizer
    assert tok is not None
    cache = {
        s.layer: {
            "hits": s.hits,
            "misses": s.misses,
            "evictions": s.evictions,
            "entries": s.entries,
            "memory_bytes": s.memory_bytes,
            "max_memory_bytes": s.max_memory_bytes,
            "hit_chars": s.hit_chars,
        }
        for s in tok.encoder.stats()
    }
    source, vocab = tok.source, tok.vocab_size
    return {"id": model.id, "name": model.id, "source": source, "vocab_size": vocab, "cache": cache}
