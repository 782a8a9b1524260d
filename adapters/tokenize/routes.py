"""``POST /v1/tokenize``, ``POST /v1/detokenize`` and ``/v1/tokenizers``: the models' tokenizers (named as
the model) and the ones registered at run time (``POST``, by name or id; ``DELETE`` removes those)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from adapters.context import GATEWAY
from adapters.params import parse_body
from adapters.tokenize.request import parse_detokenize, parse_tokenize
from adapters.tokenize.service import Tokenized, token_strs, tokenize
from dataplane.errors import InvalidRequest, ModelNotFound
from dataplane.gateway import Gateway, Model
from dataplane.tokenizer_registry import TokenizerNotFound


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


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
    gateway = request.app[GATEWAY]
    models: list[Mapping[str, Any]] = [describe(m) for m in gateway.models() if m.tokenizer is not None]
    registered: list[Mapping[str, Any]] = [t.describe() for t in gateway.registered_tokenizers.all()]
    return _json({"tokenizers": models + registered})


async def add_tokenizer(request: web.Request) -> web.Response:
    """``POST /v1/tokenizers {name, source, chat_template_path?}``: 202, loaded in the background."""
    body = parse_body(await request.read())
    fields = {"name": body.get("name"), "source": body.get("source")}
    for field, value in fields.items():
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"'{field}' is required (a string)", param=field)
    template = body.get("chat_template_path")
    if template is not None and not isinstance(template, str):
        raise InvalidRequest("'chat_template_path' must be a string", param="chat_template_path")
    unknown = sorted(set(body) - {"name", "source", "chat_template_path"})
    if unknown:
        raise InvalidRequest(f"unsupported field(s): {', '.join(unknown)}", param=unknown[0])
    gateway = request.app[GATEWAY]
    entry = gateway.registered_tokenizers.add(
        str(fields["name"]), str(fields["source"]), template, gateway.has_model
    )
    return _json({"id": entry.id, "status": entry.status, "message": entry.message}, status=202)


async def get_tokenizer(request: web.Request) -> web.Response:
    gateway, name = request.app[GATEWAY], request.match_info["name"]
    try:
        return _json(gateway.registered_tokenizers.get(name).describe())
    except TokenizerNotFound:
        return _json(describe(_model_with_tokenizer(gateway, name)))


async def tokenizer_status(request: web.Request) -> web.Response:
    gateway, name = request.app[GATEWAY], request.match_info["name"]
    try:
        return _json(gateway.registered_tokenizers.get(name).state())
    except TokenizerNotFound:
        model = _model_with_tokenizer(gateway, name)
    assert model.tokenizer is not None
    message = f"Tokenizer of model {model.id!r} is loaded and ready"
    return _json(
        {"id": model.id, "status": "completed", "message": message, "vocab_size": model.tokenizer.vocab_size}
    )


async def remove_tokenizer(request: web.Request) -> web.Response:
    gateway, name = request.app[GATEWAY], request.match_info["name"]
    try:
        entry = gateway.registered_tokenizers.remove(name)
    except TokenizerNotFound:
        if gateway.has_model(name):
            raise InvalidRequest(
                f"{name!r} is a served model's tokenizer: it goes with the model's workers", param="name"
            ) from None
        raise
    return _json({"success": True, "message": f"Tokenizer {entry.name!r} removed successfully"})


def _model_with_tokenizer(gateway: Gateway, name: str) -> Model:
    try:
        model = gateway.model(name)
    except ModelNotFound:
        raise TokenizerNotFound(f"Tokenizer {name!r} not found") from None
    if model.tokenizer is None:
        raise TokenizerNotFound(f"model {model.id!r} is served by HTTP workers: the gateway has no tokenizer")
    return model


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
