"""Correctness of a gateway before it is measured: one non-streaming and one streaming request that must
return exactly the reference worker's text, token counts and finish reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import procs
import workload


def expected_text(model_dir: Path, tokens: int) -> str:
    """What the filler script decodes to: the reference answer for every response."""
    from tokenizers import Tokenizer

    from refworker.scripts import FILLER_TEXT

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    unit = tokenizer.encode(FILLER_TEXT, add_special_tokens=False).ids
    return str(tokenizer.decode((unit * (tokens // len(unit) + 1))[:tokens]))


def parse_sse(text: str) -> tuple[str, Any, Any, bool]:
    content, finish, usage, done = "", None, None, False
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            continue
        data = json.loads(payload)
        usage = data.get("usage") or usage
        for choice in data.get("choices") or ():
            content += (choice.get("delta") or {}).get("content") or ""
            finish = choice.get("finish_reason") or finish
    return content, finish, usage, done


def sample_check(base_url: str, model: str, max_tokens: int, expect: str, unique: bool = False) -> list[str]:
    """One non-streaming and one streaming request; the list of everything wrong with them."""
    problems: list[str] = []
    status, models = procs.http_json(base_url + "/v1/models")
    ids = [m.get("id") for m in models.get("data", [])] if isinstance(models, dict) else []
    if status != 200 or model not in ids:
        problems.append(f"/v1/models: status {status}, ids {ids}, expected {model!r}")
    for stream in (False, True):
        kind = "stream" if stream else "non-stream"
        status, body = procs.http_json(
            base_url + "/v1/chat/completions", workload.chat_body(model, max_tokens, stream, unique), 60
        )
        if status != 200:
            problems.append(f"{kind}: HTTP {status}: {str(body)[:300]}")
            continue
        if stream:
            content, finish, usage, done = parse_sse(body if isinstance(body, str) else json.dumps(body))
            if not done:
                problems.append("stream: no data: [DONE]")
        else:
            choice = body["choices"][0]
            content, finish, usage = (
                choice["message"].get("content") or "",
                choice["finish_reason"],
                body["usage"],
            )
        if finish != "length":
            problems.append(f"{kind}: finish_reason {finish!r}, expected 'length'")
        if not usage or usage.get("completion_tokens") != max_tokens:
            problems.append(f"{kind}: usage {usage}, expected completion_tokens={max_tokens}")
        elif (prompt := usage.get("prompt_tokens")) != workload.prompt_tokens(unique):
            problems.append(f"{kind}: prompt_tokens {prompt}, expected {workload.prompt_tokens(unique)}")
        if content != expect:
            problems.append(f"{kind}: content differs from the worker's text: {content[:80]!r}...")
    return problems
