"""Tokenizers registered at run time (``POST /v1/tokenizers``, SMG's admin API) serve ``/v1/tokenize`` and
``/v1/detokenize`` by name, beside the served model's own; listed, looked up by id or name, removed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dataplane.tokenizer import ModelTokenizer
from tests.e2e.conftest import MODEL, Deployment, deployment, eventually, new_rid
from tests.fakes.models import LLAMA3_TEMPLATE, llama3_model_dir


@pytest.fixture(scope="module")
def gateway(model_dir: Path) -> Iterator[Deployment]:
    with deployment(1, model_dir) as d:
        yield d


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, json=body) as reply:
        assert reply.content_type == "application/json", await reply.text()
        return reply.status, await reply.json()


async def register(http: aiohttp.ClientSession, d: Deployment, **body: Any) -> dict[str, Any]:
    """Register, then wait until the job is done; returns its final status."""
    status, reply = await call(http, "POST", f"{d.url}/v1/tokenizers", body)
    assert status == 202, reply
    assert reply["status"] == "pending" and body["name"] in reply["message"]

    async def done() -> dict[str, Any] | None:
        _, state = await call(http, "GET", f"{d.url}/v1/tokenizers/{reply['id']}/status")
        return state if state["status"] != "pending" else None

    return await eventually(done, timeout=30)


async def test_a_registered_tokenizer_tokenizes_and_detokenizes_by_name(
    gateway: Deployment, llama3_dir: Path, llama3: ModelTokenizer
) -> None:
    name = new_rid("llama3")
    async with aiohttp.ClientSession() as http:
        state = await register(http, gateway, name=name, source=str(llama3_dir))
        assert (state["status"], state["vocab_size"]) == ("completed", llama3.vocab_size)
        text = "Hello, wörld! 你好"
        status, tokens = await call(
            http, "POST", f"{gateway.url}/v1/tokenize", {"model": name, "prompt": text}
        )
        assert status == 200 and tokens["tokens"] == llama3.encode(text)
        status, back = await call(
            http, "POST", f"{gateway.url}/v1/detokenize", {"model": name, "tokens": tokens["tokens"]}
        )
        assert (status, back["text"]) == (200, text)
        # The served model's own tokenizer is untouched.
        status, qwen = await call(
            http, "POST", f"{gateway.url}/v1/tokenize", {"model": MODEL, "prompt": text}
        )
        assert status == 200 and qwen["tokens"] != tokens["tokens"]

        _, listing = await call(http, "GET", f"{gateway.url}/v1/tokenizers")
        mine = [t for t in listing["tokenizers"] if t["name"] == name]
        assert mine == [
            {"id": state["id"], "name": name, "source": str(llama3_dir), "vocab_size": llama3.vocab_size}
        ]
        assert MODEL in [t["name"] for t in listing["tokenizers"]]
        for key in (state["id"], name):
            status, info = await call(http, "GET", f"{gateway.url}/v1/tokenizers/{key}")
            assert (status, info) == (200, mine[0])

        status, removed = await call(http, "DELETE", f"{gateway.url}/v1/tokenizers/{state['id']}")
        assert status == 200 and removed == {
            "success": True,
            "message": f"Tokenizer {name!r} removed successfully",
        }
        status, gone = await call(http, "POST", f"{gateway.url}/v1/tokenize", {"model": name, "prompt": text})
        assert status == 404 and gone["error"]["code"] == "model_not_found"
        status, gone = await call(http, "GET", f"{gateway.url}/v1/tokenizers/{state['id']}")
        assert status == 404 and gone["error"]["code"] == "tokenizer_not_found"


async def test_a_chat_template_of_its_own_renders_messages(
    gateway: Deployment, tmp_path: Path, llama3: ModelTokenizer
) -> None:
    bare = llama3_model_dir(tmp_path, with_template=False)
    name = new_rid("llama3-bare")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    async with aiohttp.ClientSession() as http:
        state = await register(
            http, gateway, name=name, source=str(bare), chat_template_path=str(LLAMA3_TEMPLATE)
        )
        assert state["status"] == "completed"
        status, reply = await call(
            http, "POST", f"{gateway.url}/v1/tokenize", {"model": name, "messages": messages}
        )
    assert status == 200
    assert reply["tokens"] == llama3.encode(llama3.render_chat(messages), add_special_tokens=False)


async def test_a_tokenizer_that_cannot_load_fails_its_job_with_the_reason(
    gateway: Deployment, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text(json.dumps({"not": "a tokenizer"}))
    name = new_rid("broken")
    async with aiohttp.ClientSession() as http:
        state = await register(http, gateway, name=name, source=str(broken))
        assert state["status"] == "failed" and "failed to load" in state["message"]
        assert "vocab_size" not in state
        status, _ = await call(http, "POST", f"{gateway.url}/v1/tokenize", {"model": name, "prompt": "x"})
        assert status == 404


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"source": "/x"}, 400, "name"),
        ({"name": "t"}, 400, "source"),
        ({"name": "t", "source": "meta-llama/Llama-3.2-1B"}, 400, "source"),  # a hub id: never downloaded
        ({"name": "t", "source": "{llama3}", "chat_template_path": "/nope.jinja"}, 400, "chat_template_path"),
        ({"name": "t", "source": "{llama3}", "extra": 1}, 400, "extra"),
        ({"name": MODEL, "source": "{llama3}"}, 409, "name"),  # the served model's name
    ],
)
async def test_bad_registrations_are_refused(
    gateway: Deployment, llama3_dir: Path, body: dict[str, Any], status: int, param: str
) -> None:
    body = {k: v.replace("{llama3}", str(llama3_dir)) if isinstance(v, str) else v for k, v in body.items()}
    async with aiohttp.ClientSession() as http:
        got, reply = await call(http, "POST", f"{gateway.url}/v1/tokenizers", body)
        assert (got, reply["error"]["param"]) == (status, param), reply
        _, listing = await call(http, "GET", f"{gateway.url}/v1/tokenizers")
        assert "t" not in [t["name"] for t in listing["tokenizers"]]


async def test_a_name_is_registered_once_and_a_models_tokenizer_is_not_removable(
    gateway: Deployment, llama3_dir: Path
) -> None:
    name = new_rid("twice")
    async with aiohttp.ClientSession() as http:
        assert (await register(http, gateway, name=name, source=str(llama3_dir)))["status"] == "completed"
        status, reply = await call(
            http, "POST", f"{gateway.url}/v1/tokenizers", {"name": name, "source": str(llama3_dir)}
        )
        assert status == 409 and reply["error"]["code"] == "tokenizer_already_exists"
        status, reply = await call(http, "DELETE", f"{gateway.url}/v1/tokenizers/{MODEL}")
        assert status == 400 and reply["error"]["param"] == "name"
        status, state = await call(http, "GET", f"{gateway.url}/v1/tokenizers/{MODEL}/status")
        assert (status, state["status"], state["id"]) == (200, "completed", MODEL)
        status, reply = await call(http, "DELETE", f"{gateway.url}/v1/tokenizers/nope")
        assert status == 404 and reply["error"]["code"] == "tokenizer_not_found"
        assert (await call(http, "DELETE", f"{gateway.url}/v1/tokenizers/{name}"))[0] == 200
