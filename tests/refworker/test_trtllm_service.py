"""TensorRT-LLM's gRPC service (``--engine trtllm``) over the wire: delta chunks with running counts, a
cumulative Complete, n, stops, per-token logprobs, refusals, Abort, the unary RPCs, the shared common RPCs,
the record, and the CLI."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from smg_grpc_proto.generated import common_pb2 as common
from smg_grpc_proto.generated import trtllm_service_pb2 as pb
from smg_grpc_proto.generated import trtllm_service_pb2_grpc as pb_grpc
from tokenizers import Tokenizer

from refworker import tracing
from refworker.cli import main
from refworker.config import ConfigError, WorkerConfig
from refworker.control import RECORD_METHOD
from refworker.grpc_common import JSON_OBJECT_SCHEMA
from refworker.logprobs import fake_logprob
from refworker.record import RECORDED_IDS_LIMIT
from refworker.scripts import FIXED_TEXT
from refworker.server import TRTLLM_SERVICE, VLLM_SERVICE, RefWorker
from refworker.trtllm_service import TrtllmService, constraint
from tests.fakes.refworker_proc import RefWorkerProcs, read_record
from tests.refworker.calls import EOS, collect, next_batch, prompt, refused, stored_blocks
from tests.refworker.conftest import StartWorker
from tests.refworker.test_kv_events import subscribe

PROMPT = [9707, 11, 1879, 0]  # "Hello, world!"
GUIDE = pb.GuidedDecodingParams
StartTrtllm = Callable[..., Awaitable[tuple[RefWorker, Any]]]


@pytest.fixture
def start_trtllm(start_worker: StartWorker) -> StartTrtllm:
    """In-process workers serving TensorRT-LLM's service: ``worker, stub = await start_trtllm(...)``."""
    return functools.partial(start_worker, engine="trtllm")


@pytest.fixture
async def tstub(start_trtllm: StartTrtllm) -> Any:
    _, stub = await start_trtllm()
    return stub


def make_request(
    ids: list[int] | None,
    *,
    rid: str = "req-1",
    stream: bool = True,
    max_tokens: int = 0,
    n: int = 1,
    logprobs: int | None = None,
    **fields: Any,
) -> Any:
    """A request as the gateway builds one; ``ids=None`` leaves ``tokenized`` out."""
    config = fields.pop("sampling_config", pb.SamplingConfig(beam_width=1, num_return_sequences=n))
    output = fields.pop("output_config", pb.OutputConfig(exclude_input_from_output=True))
    if logprobs is not None:
        output.logprobs = logprobs
    request = pb.GenerateRequest(
        request_id=rid,
        sampling_config=config,
        output_config=output,
        max_tokens=max_tokens,
        streaming=stream,
        **fields,
    )
    if ids is not None:
        request.tokenized.input_token_ids.extend(ids)
    return request


def chunks(messages: list[Any], index: int = 0) -> list[Any]:
    return [m.chunk for m in messages if m.HasField("chunk") and m.chunk.sequence_index == index]


def streamed_ids(messages: list[Any], index: int = 0) -> list[int]:
    return [t for c in chunks(messages, index) for t in c.token_ids]


def completes(messages: list[Any]) -> dict[int, Any]:
    return {m.complete.sequence_index: m.complete for m in messages if m.HasField("complete")}


async def test_stream_is_delta_chunks_with_running_counts_then_everything(
    start_trtllm: StartTrtllm, tokenizer: Tokenizer
) -> None:
    _, stub = await start_trtllm(tokens_per_chunk=3)
    messages = await collect(stub, make_request(PROMPT))
    assert {m.request_id for m in messages} == {"req-1"}
    kinds = [m.WhichOneof("response") for m in messages]
    assert kinds == ["chunk"] * (len(kinds) - 1) + ["complete"]
    parts = chunks(messages)
    assert {len(c.token_ids) for c in parts[:-1]} == {3}
    sizes = [len(c.token_ids) for c in parts]
    assert [c.completion_tokens for c in parts] == [sum(sizes[: i + 1]) for i in range(len(parts))]
    assert all(c.prompt_tokens == len(PROMPT) for c in parts)
    whole = completes(await collect(stub, make_request(PROMPT, rid="req-2", stream=False)))[0]
    assert streamed_ids(messages) == list(whole.output_token_ids) and whole.output_token_ids[-1] == EOS
    assert tokenizer.decode(list(whole.output_token_ids)[:-1]) == FIXED_TEXT
    done = messages[-1].complete
    assert list(done.output_token_ids) == streamed_ids(messages)  # every id again, not the last delta
    assert done.completion_tokens == len(done.output_token_ids) == parts[-1].completion_tokens
    assert (done.prompt_tokens, done.finish_reason) == (len(PROMPT), "stop")
    assert done.WhichOneof("matched_stop") is None  # EOS is TensorRT-LLM's end_id, not a stop word


async def test_non_stream_is_one_complete_with_everything(tstub: Any, tokenizer: Tokenizer) -> None:
    messages = await collect(tstub, make_request(PROMPT, stream=False))
    assert [m.WhichOneof("response") for m in messages] == ["complete"]
    done = messages[0].complete
    assert tokenizer.decode(list(done.output_token_ids)[:-1]) == FIXED_TEXT
    assert done.completion_tokens == len(done.output_token_ids) and done.finish_reason == "stop"
    assert done.prompt_tokens == len(PROMPT) and done.sequence_index == 0 and not done.logprobs


async def test_n_copies_interleave_by_sequence_index(tstub: Any, tokenizer: Tokenizer) -> None:
    messages = await collect(tstub, make_request(PROMPT, n=2))
    indices = [m.chunk.sequence_index for m in messages if m.HasField("chunk")]
    assert indices[:4] == [0, 1, 0, 1]
    done = completes(messages)
    assert sorted(done) == [0, 1] and sum(m.HasField("complete") for m in messages) == 2
    for index in (0, 1):
        ids = streamed_ids(messages, index)
        assert tokenizer.decode(ids[:-1]) == FIXED_TEXT and list(done[index].output_token_ids) == ids
        assert done[index].finish_reason == "stop"


async def test_zero_return_sequences_means_one(tstub: Any) -> None:
    messages = await collect(tstub, make_request(PROMPT, n=0, stream=False))
    assert len(messages) == 1 and messages[0].complete.sequence_index == 0


async def test_max_tokens_finishes_with_length(tstub: Any) -> None:
    messages = await collect(tstub, make_request(PROMPT, max_tokens=5))
    assert len(streamed_ids(messages)) == 5
    done = completes(messages)[0]
    assert (done.finish_reason, done.completion_tokens) == ("length", 5)
    assert done.WhichOneof("matched_stop") is None
    unstreamed = completes(await collect(tstub, make_request(PROMPT, max_tokens=5, stream=False)))[0]
    assert (unstreamed.finish_reason, len(unstreamed.output_token_ids)) == ("length", 5)


async def test_zero_max_tokens_is_the_engine_default(start_trtllm: StartTrtllm) -> None:
    _, stub = await start_trtllm(default_max_new_tokens=7)
    messages = await collect(stub, make_request(PROMPT, max_tokens=0, ignore_eos=True, stream=False))
    assert len(messages[0].complete.output_token_ids) == 7


async def test_stop_token_id_is_the_matched_stop(tstub: Any, tokenizer: Tokenizer) -> None:
    [world] = prompt(tokenizer, "世界")
    messages = await collect(tstub, make_request(PROMPT, stop_token_ids=[world]))
    ids = streamed_ids(messages)
    assert ids[-1] == world and tokenizer.decode(ids) == "Hello! 你好，世界"
    done = completes(messages)[0]
    assert (done.finish_reason, done.matched_token_id) == ("stop", world)
    assert list(done.output_token_ids) == ids


async def test_min_tokens_and_ignore_eos(tstub: Any) -> None:
    done = completes(await collect(tstub, make_request(PROMPT, ignore_eos=True, max_tokens=50, stream=False)))
    assert len(done[0].output_token_ids) == 50 and EOS not in done[0].output_token_ids
    config = pb.SamplingConfig(num_return_sequences=1, min_tokens=60)
    request = make_request(PROMPT, max_tokens=100, stream=False, sampling_config=config)
    done = completes(await collect(tstub, request))
    assert len(done[0].output_token_ids) == 61 and done[0].output_token_ids[-1] == EOS


async def test_sampling_knobs_are_accepted(tstub: Any) -> None:
    config = pb.SamplingConfig(
        beam_width=1, num_return_sequences=1, seed=2**63, temperature=0.5, top_k=5, top_p=0.9, min_p=0.1
    )
    config.repetition_penalty = config.presence_penalty = config.frequency_penalty = 1.1
    request = make_request(
        PROMPT,
        max_tokens=3,
        stream=False,
        sampling_config=config,
        bad_token_ids=[5],
        lora_config=pb.LoraConfig(),
    )
    assert completes(await collect(tstub, request))[0].completion_tokens == 3


async def test_logprobs_per_token_with_the_chosen_token_first(tstub: Any) -> None:
    messages = await collect(tstub, make_request(PROMPT, max_tokens=4, logprobs=2))
    parts = chunks(messages)
    assert [[t.token_id for t in c.logprobs] for c in parts] == [list(c.token_ids) for c in parts]
    values = [t.logprob for c in parts for t in c.logprobs]
    assert values == pytest.approx([fake_logprob(p) for p in range(4)])
    for token in (t for c in parts for t in c.logprobs):
        top = list(token.top_logprobs)
        assert len(top) == 3 and (top[0].token_id, top[0].logprob) == (token.token_id, token.logprob)
        assert top[0].logprob > top[1].logprob > top[2].logprob
        assert len({t.token_id for t in top}) == 3
    done = completes(messages)[0]
    assert [t.token_id for t in done.logprobs] == list(done.output_token_ids)  # all of them
    assert [t.logprob for t in done.logprobs] == pytest.approx(values)
    unstreamed = completes(await collect(tstub, make_request(PROMPT, max_tokens=4, logprobs=2, stream=False)))
    assert [t.logprob for t in unstreamed[0].logprobs] == pytest.approx(values)


async def test_zero_logprobs_has_no_top_lists_and_unset_has_none(tstub: Any) -> None:
    done = completes(await collect(tstub, make_request(PROMPT, max_tokens=3, logprobs=0, stream=False)))[0]
    assert len(done.logprobs) == 3 and not any(t.top_logprobs for t in done.logprobs)
    plain = await collect(tstub, make_request(PROMPT, max_tokens=3))
    assert not any(m.chunk.logprobs for m in plain if m.HasField("chunk"))
    assert not completes(plain)[0].logprobs


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        (
            {"stop": ["\n"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "stop (string stops) is not supported by the reference worker",
        ),
        (
            {"sampling_config": pb.SamplingConfig(beam_width=2, num_return_sequences=1)},
            grpc.StatusCode.UNIMPLEMENTED,
            "beam search",
        ),
        (
            {"sampling_config": pb.SamplingConfig(beam_width=1, beam_width_array=[1, 4])},
            grpc.StatusCode.UNIMPLEMENTED,
            "beam search",
        ),
        ({"logprobs": 21}, grpc.StatusCode.INVALID_ARGUMENT, "output_config.logprobs=21"),
        ({"logprobs": -1}, grpc.StatusCode.INVALID_ARGUMENT, "output_config.logprobs=-1"),
        (
            {"output_config": pb.OutputConfig(prompt_logprobs=1)},
            grpc.StatusCode.UNIMPLEMENTED,
            "output_config.prompt_logprobs",
        ),
        (
            {"output_config": pb.OutputConfig(return_generation_logits=True)},
            grpc.StatusCode.UNIMPLEMENTED,
            "output_config.return_generation_logits",
        ),
        (
            {"guided_decoding": GUIDE(guide_type=GUIDE.GUIDE_TYPE_STRUCTURAL_TAG, guide="{}")},
            grpc.StatusCode.UNIMPLEMENTED,
            "STRUCTURAL_TAG",
        ),
        (  # as the SGLang path answers ebnf_grammar
            {"guided_decoding": GUIDE(guide_type=GUIDE.GUIDE_TYPE_EBNF_GRAMMAR, guide='root ::= "a"')},
            grpc.StatusCode.UNIMPLEMENTED,
            "ebnf_grammar",
        ),
        (
            {"guided_decoding": GUIDE(guide_type=GUIDE.GUIDE_TYPE_REGEX, guide="[z-a]")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "regex",
        ),
        (
            {"multimodal_input": pb.MultimodalInput(image_data=[b"\x89PNG"])},
            grpc.StatusCode.UNIMPLEMENTED,
            "multimodal",
        ),
        (
            {
                "disaggregated_params": pb.DisaggregatedParams(
                    request_type=pb.DisaggregatedParams.REQUEST_TYPE_CONTEXT_ONLY
                )
            },
            grpc.StatusCode.UNIMPLEMENTED,
            "REQUEST_TYPE_CONTEXT_ONLY",
        ),
        ({"embedding_bias": [0.0, 1.0]}, grpc.StatusCode.INVALID_ARGUMENT, "must match vocab_size"),
    ],
)
async def test_requests_it_cannot_serve_are_refused(
    tstub: Any, fields: dict[str, Any], code: grpc.StatusCode, message: str
) -> None:
    error = await refused(tstub, make_request(PROMPT, **fields))
    assert error.code() == code and message in (error.details() or "")


async def test_missing_tokenized_input_is_refused(start_trtllm: StartTrtllm) -> None:
    worker, stub = await start_trtllm()
    error = await refused(stub, make_request(None, rid="untokenized"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details() == "Missing tokenized input"
    assert worker.engine.record.to_dict()["received"] == ["untokenized"]


async def test_empty_prompt_and_injected_failure(tstub: Any, tokenizer: Tokenizer) -> None:
    assert (await refused(tstub, make_request([]))).code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await refused(tstub, make_request(prompt(tokenizer, "[ref fail=UNAVAILABLE]")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and error.details() == "injected failure"


async def test_regex_guide_is_served(tstub: Any, tokenizer: Tokenizer) -> None:
    guided = GUIDE(guide_type=GUIDE.GUIDE_TYPE_REGEX, guide="(yes|no)!")
    done = completes(await collect(tstub, make_request(PROMPT, stream=False, guided_decoding=guided)))[0]
    assert tokenizer.decode(list(done.output_token_ids)[:-1]) in ("yes!", "no!")


def test_guide_types_map_onto_the_sglang_constraints() -> None:
    def guided(guide_type: int, guide: str = "") -> Any:
        return pb.GenerateRequest(guided_decoding=GUIDE(guide_type=guide_type, guide=guide))

    assert constraint(guided(GUIDE.GUIDE_TYPE_JSON)) == ("json_schema", JSON_OBJECT_SCHEMA)
    assert constraint(guided(GUIDE.GUIDE_TYPE_JSON_SCHEMA, "{}")) == ("json_schema", "{}")
    assert constraint(guided(GUIDE.GUIDE_TYPE_REGEX, "a+")) == ("regex", "a+")
    assert constraint(guided(GUIDE.GUIDE_TYPE_EBNF_GRAMMAR, "g")) == ("ebnf_grammar", "g")
    assert constraint(guided(GUIDE.GUIDE_TYPE_REGEX)) is None  # an empty guide: TensorRT-LLM applies none
    assert constraint(guided(GUIDE.GUIDE_TYPE_UNSPECIFIED, "x")) is None
    assert constraint(pb.GenerateRequest()) is None


async def test_stall_then_abort_ends_every_choice(start_trtllm: StartTrtllm, tokenizer: Tokenizer) -> None:
    worker, stub = await start_trtllm()
    call = stub.Generate(make_request(prompt(tokenizer, "[ref stall=1]"), rid="stalled", n=2))
    first = await call.read()
    assert first.HasField("chunk") and first.chunk.sequence_index == 0
    reply = await stub.Abort(pb.AbortRequest(request_id="stalled"))
    assert reply.success and reply.message == "Request stalled aborted"
    unknown = await stub.Abort(pb.AbortRequest(request_id="nobody"))
    assert not unknown.success and "not found" in unknown.message
    rest = []
    while (message := await call.read()) is not grpc.aio.EOF:
        rest.append(message)
    assert await call.code() == grpc.StatusCode.OK
    done = completes(rest)
    assert sorted(done) == [0, 1] and {d.finish_reason for d in done.values()} == {"abort"}
    # A Complete holds all the choice's tokens so far: choice 0 had its first chunk, choice 1 nothing.
    assert list(done[0].output_token_ids) == list(first.chunk.token_ids) and done[0].completion_tokens == 1
    assert not done[1].output_token_ids and done[1].completion_tokens == 0
    aborted = worker.engine.record.to_dict()["aborted"]
    assert {"request_id": "stalled", "reason": "", "found": True} in aborted
    assert {"request_id": "nobody", "reason": "", "found": False} in aborted
    assert not worker.engine.live


async def test_abort_during_latency_wait(start_trtllm: StartTrtllm, tokenizer: Tokenizer) -> None:
    worker, stub = await start_trtllm(ttft_ms=60_000)
    call = stub.Generate(make_request(prompt(tokenizer, "hi"), rid="slow", stream=False))
    async with asyncio.timeout(5):
        await worker.engine.wait_until(lambda: "slow" in worker.engine.live)
    assert (await stub.Abort(pb.AbortRequest(request_id="slow"))).success
    done = (await call.read()).complete
    assert (done.finish_reason, done.completion_tokens) == ("abort", 0)


async def test_requests_are_recorded_and_read_over_the_control_method(start_trtllm: StartTrtllm) -> None:
    worker, stub = await start_trtllm()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request = make_request([1, 2, 3], rid="traced", max_tokens=2)
    _ = [m async for m in stub.Generate(request, metadata=(("traceparent", traceparent),))]
    long_prompt = list(range(1000, 1000 + RECORDED_IDS_LIMIT + 10))
    await collect(stub, make_request(long_prompt, rid="long", max_tokens=1))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        read = channel.unary_unary(
            RECORD_METHOD, request_serializer=Empty.SerializeToString, response_deserializer=Struct.FromString
        )
        record = MessageToDict(await read(Empty(), timeout=5))
    assert record["received"] == ["traced", "long"] and record["served_requests"] == 2
    first, second = record["recent_requests"]
    assert first["tokenized"]["input_token_ids"] == [1, 2, 3] and first["streaming"]
    assert len(second["tokenized"]["input_token_ids"]) == RECORDED_IDS_LIMIT
    assert second["tokenized"]["input_token_ids_count"] == len(long_prompt)
    assert record["metadata"][0]["traceparent"] == traceparent


async def test_the_request_span_is_the_sglang_paths(
    start_trtllm: StartTrtllm, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing._State, "tracer", provider.get_tracer("test"))
    _, stub = await start_trtllm()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request = make_request(PROMPT, rid="spanned", max_tokens=2)
    _ = [m async for m in stub.Generate(request, metadata=(("traceparent", traceparent),))]
    (span,) = exporter.get_finished_spans()
    assert span.name == tracing.SPAN_NAME and span.parent is not None
    attributes = dict(span.attributes or {})
    assert attributes == {"smg.request_id": "spanned", "stream": True, "prompt_tokens": len(PROMPT)}


async def test_health_check(start_trtllm: StartTrtllm) -> None:
    worker, stub = await start_trtllm()
    assert (await stub.HealthCheck(pb.HealthCheckRequest())).status == "OK"
    service = TrtllmService(worker.engine)
    service.shutting_down = True
    assert (await service.HealthCheck(pb.HealthCheckRequest(), None)).status == "shutting down"


async def test_standard_health_names_the_trtllm_service(start_trtllm: StartTrtllm) -> None:
    worker, _ = await start_trtllm()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        checker = health_pb2_grpc.HealthStub(channel)
        for service in ("", TRTLLM_SERVICE):
            status = await checker.Check(health_pb2.HealthCheckRequest(service=service))
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await checker.Check(health_pb2.HealthCheckRequest(service=VLLM_SERVICE))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert pb.DESCRIPTOR.services_by_name["TrtllmService"].full_name == TRTLLM_SERVICE


async def test_model_info(start_trtllm: StartTrtllm) -> None:
    worker, stub = await start_trtllm()
    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.model_id == str(worker.engine.model.path)
    assert (info.max_input_len, info.max_seq_len) == (131072, 131072) and info.vocab_size > 150_000
    assert (info.max_batch_size, info.hidden_size, info.num_layers, list(info.supported_features)) == (
        0,
        0,
        0,
        [],
    )
    _, named = await start_trtllm(reported_model_path="Qwen/Qwen3-0.6B")
    assert (await named.GetModelInfo(pb.GetModelInfoRequest())).model_id == "Qwen/Qwen3-0.6B"


async def test_server_info(tstub: Any) -> None:
    info = await tstub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.version and info.backend == "pytorch"
    sizes = (
        info.tensor_parallel_size,
        info.pipeline_parallel_size,
        info.context_parallel_size,
        info.world_size,
    )
    assert sizes == (1, 1, 1, 1)


async def test_only_the_services_own_rpcs_are_served(start_trtllm: StartTrtllm) -> None:
    worker, stub = await start_trtllm()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Embed(pb.EmbedRequest(request_id="e", tokenized=pb.TokenizedInput(input_token_ids=[1])))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        flush = channel.unary_unary(
            "/trtllm.TrtllmService/FlushCache",
            request_serializer=common.FlushCacheRequest.SerializeToString,
            response_deserializer=common.FlushCacheResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await flush(common.FlushCacheRequest())
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not hasattr(stub, "GetLoads")


async def test_common_rpcs(tstub: Any) -> None:
    parts = [chunk async for chunk in tstub.GetTokenizer(common.GetTokenizerRequest())]
    assert parts[-1].sha256 == hashlib.sha256(b"".join(p.data for p in parts)).hexdigest()
    call = subscribe(tstub)
    long_prompt = list(range(1000, 1040))
    await collect(tstub, make_request(long_prompt, max_tokens=2))
    blocks = stored_blocks(await next_batch(call))
    assert [ids for _, ids in blocks] == [long_prompt[:16], long_prompt[16:32]]
    call.cancel()


def test_engine_trtllm_needs_grpc_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--mode", "http", "--engine", "trtllm"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "usage:" in error and "--engine trtllm" in error and "--mode http" in error
    with pytest.raises(ConfigError):
        WorkerConfig(mode="http", engine="trtllm")


async def test_process_serves_trtllm() -> None:
    async with RefWorkerProcs(
        1, "--engine", "trtllm", "--script", "filler", "--filler-tokens", "3"
    ) as addresses:
        host, port = addresses[0]
        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            stub = pb_grpc.TrtllmServiceStub(channel)
            assert (await stub.HealthCheck(pb.HealthCheckRequest(), timeout=5)).status == "OK"
            messages = await collect(stub, make_request([1, 2, 3], rid="proc-1", max_tokens=10, stream=False))
            info = await stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
        assert len(messages[0].complete.output_token_ids) == 4 and info.backend == "pytorch"
        record = await asyncio.to_thread(read_record, host, port)
        assert record["received"] == ["proc-1"]
