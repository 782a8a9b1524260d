"""Two models with different tokenizers behind one gateway, one of them fetched from its worker, over
HTTP and over the gateway's own gRPC API (``smg.gateway.v1.Tokenizer``).

The Qwen3 worker reports its local model directory; the Llama 3 worker reports a hub id, as an engine
started from the hub does, so the gateway asks it for its tokenizer (``GetTokenizer``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import grpc
import openai
import orjson
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from adapters.grpc.server import GRPC_INGRESS
from dataplane.config import GatewayConfig, WorkerUrl
from dataplane.tokenizer import ModelTokenizer
from proto._gen.smg.gateway import v1 as pb
from refworker import tokenizer_bundle
from tests.e2e.conftest import MODEL, GatewayServer
from tests.fakes.models import LLAMA3_BOS, LLAMA3_MODEL
from tests.fakes.refworker_proc import RefWorkerProcs

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    {"role": "user", "content": "Thanks"},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


class Models:
    def __init__(self, gateway: GatewayServer, cache_dir: Path) -> None:
        self.gateway = gateway
        self.cache_dir = cache_dir
        runner = gateway._runner
        assert runner is not None
        self.grpc_port = runner.app[GRPC_INGRESS].port

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def models(llama3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    cache_dir = tmp_path_factory.mktemp("smg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMG_CACHE_DIR", str(cache_dir))
        qwen = RefWorkerProcs(1)
        llama = RefWorkerProcs(
            1,
            *("--model-path", str(llama3_dir), "--served-model-name", LLAMA3_MODEL),
            *("--reported-model-path", LLAMA3_MODEL),
        )
        try:
            workers = [*qwen.start(), *llama.start()]
            urls = tuple(WorkerUrl.parse(f"grpc://{h}:{p}") for h, p in workers)
            config = GatewayConfig(worker_urls=urls, host="127.0.0.1", port=0, grpc_port=0)
            gateway = GatewayServer(config).start()
            try:
                gateway.wait_ready(healthy=2)
                yield Models(gateway, cache_dir)
            finally:
                gateway.stop()
        finally:
            qwen.stop()
            llama.stop()


@pytest.fixture
async def stub(models: Models) -> AsyncIterator[pb.TokenizerStub]:
    channel = Channel("127.0.0.1", models.grpc_port)
    try:
        yield pb.TokenizerStub(channel)
    finally:
        channel.close()


async def post(url: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as reply:
        assert reply.status == 200, await reply.text()
        return await reply.json()


# ---- tokenizer sources -------------------------------------------------------------------------------


async def test_each_model_tokenizes_with_its_own_tokenizer(
    models: Models, qwen: ModelTokenizer, llama3: ModelTokenizer
) -> None:
    text = "Hello world, 你好"
    for name, tok in ((MODEL, qwen), (LLAMA3_MODEL, llama3)):
        body = await post(f"{models.url}/v1/tokenize", {"model": name, "prompt": text})
        assert body["tokens"] == tok.tokenizer.encode(text, add_special_tokens=False).ids
    with_bos = await post(
        f"{models.url}/v1/tokenize", {"model": LLAMA3_MODEL, "prompt": text, "add_special_tokens": True}
    )
    assert with_bos["tokens"] == [LLAMA3_BOS, *llama3.encode(text)]


async def test_the_fetched_tokenizer_is_the_workers_verified_bundle(models: Models, llama3_dir: Path) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{models.url}/v1/tokenizers") as reply:
        listed = {t["name"]: t for t in (await reply.json())["tokenizers"]}
    digest = tokenizer_bundle.build(llama3_dir).sha256
    fetched = models.cache_dir / "tokenizers" / digest
    assert listed[LLAMA3_MODEL]["source"] == str(fetched)
    assert listed[MODEL]["source"] != str(fetched)  # Qwen's came from the worker's local directory
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (fetched / name).read_bytes() == (llama3_dir / name).read_bytes()


async def test_the_llama_template_renders_chat_tokenization(models: Models, llama3: ModelTokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    body = await post(f"{models.url}/v1/tokenize", {"model": LLAMA3_MODEL, "messages": messages})
    assert body["tokens"] == llama3.encode(llama3.render_chat(messages))
    assert body["tokens"][0] == LLAMA3_BOS and body["tokens"].count(LLAMA3_BOS) == 1
    assert body["max_model_len"] == 131072


async def test_eos_ids_come_from_the_shipped_generation_config(models: Models) -> None:
    """<|eot_id|> ends the text: an EOS of generation_config.json, not the tokenizer config's eos_token."""
    client = openai.AsyncOpenAI(base_url=f"{models.url}/v1", api_key="none", max_retries=0)
    async with client:
        done = await client.completions.create(
            model=LLAMA3_MODEL, prompt="Hello<|eot_id|> world [ref script=echo]", max_tokens=50
        )
    assert (done.choices[0].text, done.choices[0].finish_reason) == ("Hello", "stop")


# ---- the gRPC API --------------------------------------------------------------------------------------


async def test_grpc_tokenize_count_and_detokenize_match_http(models: Models, stub: pb.TokenizerStub) -> None:
    for name, special in ((MODEL, "<|im_end|>"), (LLAMA3_MODEL, "<|eot_id|>")):
        text = f"The gRPC API {special} tokenizes alike 🤖"
        http = await post(
            f"{models.url}/v1/tokenize", {"model": name, "prompt": text, "return_token_strs": True}
        )
        reply = await stub.tokenize(pb.TokenizeRequest(model=name, text=text, return_token_strs=True))
        assert reply.token_ids == http["tokens"] and reply.token_strs == http["token_strs"]
        assert (reply.count, reply.char_count, reply.max_model_len) == (http["count"], len(text), 131072)
        count = await stub.count_tokens(pb.TokenizeRequest(model=name, text=text))
        assert (count.count, count.char_count) == (http["count"], len(text))
        ids = http["tokens"]
        kept = await stub.detokenize(
            pb.DetokenizeRequest(model=name, token_ids=ids, skip_special_tokens=False)
        )
        skipped = await stub.detokenize(pb.DetokenizeRequest(model=name, token_ids=ids))
        assert kept.text == text
        http_text = await post(f"{models.url}/v1/detokenize", {"model": name, "tokens": ids})
        assert skipped.text == http_text["text"] != text


def _grpc_chat(kwargs: dict[str, Any]) -> pb.Chat:
    messages = []
    for m in CONVERSATION:
        calls = [
            pb.ToolCall(
                id=c["id"],
                type=c["type"],
                function=pb.FunctionCall(name=c["function"]["name"], arguments=c["function"]["arguments"]),
            )
            for c in m.get("tool_calls", [])
        ]
        messages.append(
            pb.ChatMessage(
                role=m["role"], content=m["content"], tool_calls=calls, tool_call_id=m.get("tool_call_id", "")
            )
        )
    return pb.Chat(
        messages=messages,
        tools_json=[orjson.dumps(t).decode() for t in TOOLS],
        chat_template_kwargs_json=orjson.dumps(kwargs).decode(),
    )


async def test_grpc_chat_renders_and_tokenizes_as_http(
    models: Models, stub: pb.TokenizerStub, qwen: ModelTokenizer
) -> None:
    kwargs = {"enable_thinking": False}
    http = await post(
        f"{models.url}/v1/tokenize",
        {"model": MODEL, "messages": CONVERSATION, "tools": TOOLS, "chat_template_kwargs": kwargs},
    )
    chat = _grpc_chat(kwargs)
    rendered = await stub.render_chat(pb.RenderChatRequest(model=MODEL, chat=chat))
    assert rendered.prompt == qwen.render_chat(CONVERSATION, tools=TOOLS, template_kwargs=kwargs)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in rendered.prompt
    reply = await stub.tokenize(pb.TokenizeRequest(model=MODEL, chat=chat))
    assert reply.token_ids == http["tokens"] == qwen.encode(rendered.prompt)
    assert reply.char_count == http["char_count"] == len(rendered.prompt)


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        ("tokenize", Status.NOT_FOUND, "not found"),
        ("no_input", Status.INVALID_ARGUMENT, "one of 'text' and 'chat'"),
        ("bad_id", Status.INVALID_ARGUMENT, "not in the vocabulary"),
        ("bad_json", Status.INVALID_ARGUMENT, "not valid JSON"),
        ("bad_role", Status.INVALID_ARGUMENT, "role must be one of"),
        ("no_chat", Status.INVALID_ARGUMENT, "'chat' is required"),
    ],
)
async def test_grpc_errors_are_statuses(
    stub: pb.TokenizerStub, call: str, status: Status, message: str
) -> None:
    requests: dict[str, Any] = {
        "tokenize": lambda: stub.tokenize(pb.TokenizeRequest(model="nope", text="x")),
        "no_input": lambda: stub.tokenize(pb.TokenizeRequest(model=MODEL)),
        "bad_id": lambda: stub.detokenize(pb.DetokenizeRequest(model=MODEL, token_ids=[1, 10**6])),
        "bad_json": lambda: stub.count_tokens(
            pb.TokenizeRequest(model=MODEL, chat=pb.Chat(messages=[], tools_json=["{nope"]))
        ),
        "bad_role": lambda: stub.render_chat(
            pb.RenderChatRequest(
                model=MODEL, chat=pb.Chat(messages=[pb.ChatMessage(role="robot", content="x")])
            )
        ),
        "template": lambda: stub.render_chat(
            pb.RenderChatRequest(model=LLAMA3_MODEL, chat=pb.Chat(messages=[pb.ChatMessage(role="user")]))
        ),
        "no_chat": lambda: stub.render_chat(pb.RenderChatRequest(model=MODEL)),
    }
    with pytest.raises(GRPCError) as info:
        await requests[call]()
    assert info.value.status is status and message in (info.value.message or "")


# ---- a client built from the .proto alone (as another language would) ------------------------------


@pytest.fixture(scope="module")
def foreign_pb2(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """``tokenizer.proto`` compiled by protoc's own Python generator, with no code of ours."""
    out = tmp_path_factory.mktemp("foreign")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out}",
         str(PROTO_DIR / "smg/gateway/v1/tokenizer.proto")],
        check=True,
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location(
        "foreign_tokenizer_pb2", out / "smg/gateway/v1/tokenizer_pb2.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_a_grpcio_client_from_the_proto_alone(
    models: Models, foreign_pb2: Any, llama3: ModelTokenizer
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{models.grpc_port}") as channel:
        tokenize = channel.unary_unary(
            "/smg.gateway.v1.Tokenizer/Tokenize",
            request_serializer=foreign_pb2.TokenizeRequest.SerializeToString,
            response_deserializer=foreign_pb2.TokenizeResponse.FromString,
        )
        chat = foreign_pb2.Chat(messages=[foreign_pb2.ChatMessage(role="user", content="Hi")])
        reply = await tokenize(foreign_pb2.TokenizeRequest(model=LLAMA3_MODEL, chat=chat))
        assert list(reply.token_ids) == llama3.encode(llama3.render_chat([{"role": "user", "content": "Hi"}]))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await tokenize(foreign_pb2.TokenizeRequest(model="nope", text="x"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
