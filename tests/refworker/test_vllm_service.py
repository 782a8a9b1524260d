"""The vLLM gRPC service (``--engine vllm``) over the wire: delta stream shape, n, stops, logprobs,
refusals, Abort, the unary RPCs, the shared common RPCs, and the CLI."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from smg_grpc_proto.generated import common_pb2 as common
from smg_grpc_proto.generated import sglang_scheduler_pb2 as sglang_pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as sglang_grpc
from smg_grpc_proto.generated import vllm_engine_pb2 as pb
from smg_grpc_proto.generated import vllm_engine_pb2_grpc as pb_grpc
from tokenizers import Tokenizer

from refworker import tracing
from refworker.cli import main
from refworker.config import ConfigError, WorkerConfig
from refworker.scripts import FIXED_TEXT
from refworker.server import VLLM_SERVICE, RefWorker
from refworker.vllm_service import JSON_OBJECT_SCHEMA, VllmService, constraint
from tests.fakes.refworker_proc import PROJECT_ROOT, RefWorkerProcs
from tests.refworker.calls import EOS, collect, completes, next_batch, prompt, refused, stored_blocks
from tests.refworker.conftest import StartWorker
from tests.refworker.test_kv_events import subscribe

PROMPT = [9707, 11, 1879, 0]  # "Hello, world!"
StartVllm = Callable[..., Awaitable[tuple[RefWorker, Any]]]


@pytest.fixture
def start_vllm(start_worker: StartWorker) -> StartVllm:
    """In-process workers serving vLLM's service: ``worker, stub = await start_vllm(script="echo")``."""
    return functools.partial(start_worker, engine="vllm")


@pytest.fixture
async def vstub(start_vllm: StartVllm) -> Any:
    _, stub = await start_vllm()
    return stub


def make_request(ids: list[int], *, rid: str = "req-1", stream: bool = True, **sampling: Any) -> Any:
    return pb.GenerateRequest(
        request_id=rid,
        tokenized=pb.TokenizedInput(input_ids=ids),
        sampling_params=pb.SamplingParams(temperature=1.0, top_p=1.0, **sampling),
        stream=stream,
    )


def chunks(messages: list[Any], index: int = 0) -> list[Any]:
    return [m.chunk for m in messages if m.HasField("chunk") and m.chunk.index == index]


def streamed_ids(messages: list[Any], index: int = 0) -> list[int]:
    return [t for c in chunks(messages, index) for t in c.token_ids]


async def test_stream_is_delta_chunks_then_the_last_delta_again(
    start_vllm: StartVllm, tokenizer: Tokenizer
) -> None:
    _, stub = await start_vllm(tokens_per_chunk=3)
    messages = await collect(stub, make_request(PROMPT))
    assert "request_id" not in pb.GenerateResponse.DESCRIPTOR.fields_by_name
    kinds = [m.WhichOneof("response") for m in messages]
    assert kinds == ["chunk"] * (len(kinds) - 1) + ["complete"]
    parts = chunks(messages)
    assert [c.completion_tokens for c in parts] == [len(c.token_ids) for c in parts]
    assert {len(c.token_ids) for c in parts[:-1]} == {3}
    assert all(c.prompt_tokens == len(PROMPT) for c in parts)
    whole = list(
        completes(await collect(stub, make_request(PROMPT, rid="req-2", stream=False)))[0].output_ids
    )
    assert streamed_ids(messages) == whole and whole[-1] == EOS
    assert tokenizer.decode(whole[:-1]) == FIXED_TEXT
    done = messages[-1].complete
    assert list(done.output_ids) == list(parts[-1].token_ids)  # the last delta only
    assert done.completion_tokens == len(parts[-1].token_ids) and done.prompt_tokens == len(PROMPT)
    assert done.finish_reason == "stop"


async def test_non_stream_is_one_complete_with_everything(vstub: Any, tokenizer: Tokenizer) -> None:
    messages = await collect(vstub, make_request(PROMPT, stream=False))
    assert [m.WhichOneof("response") for m in messages] == ["complete"]
    done = messages[0].complete
    assert tokenizer.decode(list(done.output_ids)[:-1]) == FIXED_TEXT
    assert done.completion_tokens == len(done.output_ids) and done.finish_reason == "stop"
    assert done.prompt_tokens == len(PROMPT) and done.index == 0


async def test_n_copies_interleave(vstub: Any, tokenizer: Tokenizer) -> None:
    messages = await collect(vstub, make_request(PROMPT, n=2))
    indices = [m.chunk.index for m in messages if m.HasField("chunk")]
    assert indices[:4] == [0, 1, 0, 1]
    done = completes(messages)
    assert sorted(done) == [0, 1] and sum(m.HasField("complete") for m in messages) == 2
    for index in (0, 1):
        assert tokenizer.decode(streamed_ids(messages, index)[:-1]) == FIXED_TEXT
        assert done[index].finish_reason == "stop"


async def test_n_zero_means_one(vstub: Any) -> None:
    messages = await collect(vstub, make_request(PROMPT, n=0, stream=False))
    assert len(messages) == 1 and messages[0].complete.index == 0


async def test_max_tokens_finishes_with_length(vstub: Any) -> None:
    messages = await collect(vstub, make_request(PROMPT, max_tokens=5))
    assert len(streamed_ids(messages)) == 5
    done = completes(messages)[0]
    assert done.finish_reason == "length" and done.WhichOneof("matched_stop") is None
    unstreamed = completes(await collect(vstub, make_request(PROMPT, max_tokens=5, stream=False)))[0]
    assert (unstreamed.finish_reason, unstreamed.completion_tokens) == ("length", 5)


async def test_default_max_tokens_applies_when_unset(start_vllm: StartVllm) -> None:
    _, stub = await start_vllm(default_max_new_tokens=7)
    messages = await collect(stub, make_request(PROMPT, ignore_eos=True, stream=False))
    assert len(messages[0].complete.output_ids) == 7


async def test_stop_token_id_is_the_matched_stop(vstub: Any, tokenizer: Tokenizer) -> None:
    [world] = prompt(tokenizer, "世界")
    messages = await collect(vstub, make_request(PROMPT, stop_token_ids=[world]))
    ids = streamed_ids(messages)
    assert ids[-1] == world and tokenizer.decode(ids) == "Hello! 你好，世界"
    done = completes(messages)[0]
    assert (done.finish_reason, done.matched_token_id) == ("stop", world)


async def test_eos_is_not_a_matched_stop(vstub: Any) -> None:
    # vLLM's stop_reason stays None when the tokenizer's EOS ends the output.
    done = completes(await collect(vstub, make_request(PROMPT, stream=False)))[0]
    assert done.output_ids[-1] == EOS and done.finish_reason == "stop"
    assert done.WhichOneof("matched_stop") is None


async def test_min_tokens_and_ignore_eos(vstub: Any) -> None:
    done = completes(await collect(vstub, make_request(PROMPT, ignore_eos=True, max_tokens=50, stream=False)))
    assert len(done[0].output_ids) == 50 and EOS not in done[0].output_ids
    done = completes(await collect(vstub, make_request(PROMPT, min_tokens=60, max_tokens=100, stream=False)))
    assert len(done[0].output_ids) == 61 and done[0].output_ids[-1] == EOS


async def test_logprobs_per_token_with_top_alternatives(vstub: Any) -> None:
    messages = await collect(vstub, make_request(PROMPT, max_tokens=4, logprobs=2, seed=5))
    parts = chunks(messages)
    assert [list(c.output_logprobs.token_ids) for c in parts] == [list(c.token_ids) for c in parts]
    values = [v for c in parts for v in c.output_logprobs.token_logprobs]
    assert values == pytest.approx([-0.001, -0.011, -0.021, -0.031])
    for part in parts:
        (top,) = part.output_logprobs.top_logprobs
        assert (
            len(top.values) == 2 and top.token_ids[0] == part.token_ids[0] and top.values[0] > top.values[1]
        )
    done = completes(messages)[0]
    assert list(done.output_logprobs.token_ids) == list(done.output_ids)
    unstreamed = completes(await collect(vstub, make_request(PROMPT, max_tokens=4, logprobs=2, stream=False)))
    assert unstreamed[0].output_logprobs.token_logprobs == pytest.approx(values)
    assert not any(c.HasField("input_logprobs") for c in parts)


async def test_zero_logprobs_has_no_top_lists_and_unset_has_none(vstub: Any) -> None:
    done = completes(await collect(vstub, make_request(PROMPT, max_tokens=3, logprobs=0, stream=False)))[0]
    assert len(done.output_logprobs.token_logprobs) == 3 and not done.output_logprobs.top_logprobs
    plain = completes(await collect(vstub, make_request(PROMPT, max_tokens=3, stream=False)))[0]
    assert not plain.HasField("output_logprobs") and not plain.HasField("input_logprobs")


async def test_prompt_logprobs_come_with_the_first_output(vstub: Any) -> None:
    messages = await collect(vstub, make_request(PROMPT, max_tokens=3, prompt_logprobs=1))
    parts = chunks(messages)
    assert [c.HasField("input_logprobs") for c in parts] == [True, False, False]
    first = parts[0].input_logprobs
    assert list(first.token_ids) == PROMPT and not first.token_logprobs[0].HasField("value")
    assert not completes(messages)[0].HasField("input_logprobs")
    done = completes(
        await collect(vstub, make_request(PROMPT, max_tokens=3, prompt_logprobs=0, stream=False))
    )
    assert list(done[0].input_logprobs.token_ids) == PROMPT and not done[0].input_logprobs.top_logprobs


@pytest.mark.parametrize(
    ("sampling", "code", "message"),
    [
        (
            {"stop": ["\n"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "sampling_params.stop (string stops) is not supported by the reference worker",
        ),
        ({"logprobs": -1}, grpc.StatusCode.INVALID_ARGUMENT, "sampling_params.logprobs=-1"),
        ({"prompt_logprobs": 21}, grpc.StatusCode.INVALID_ARGUMENT, "sampling_params.prompt_logprobs=21"),
        ({"structural_tag": "{}"}, grpc.StatusCode.UNIMPLEMENTED, "structural_tag"),
        ({"choice": pb.ChoiceConstraint(choices=["a"])}, grpc.StatusCode.UNIMPLEMENTED, "choice"),
        ({"grammar": 'root ::= "a"'}, grpc.StatusCode.UNIMPLEMENTED, "ebnf_grammar"),  # as SGLang's
        ({"regex": "[z-a]"}, grpc.StatusCode.INVALID_ARGUMENT, "regex"),
    ],
)
async def test_requests_it_cannot_serve_are_refused(
    vstub: Any, sampling: dict[str, Any], code: grpc.StatusCode, message: str
) -> None:
    error = await refused(vstub, make_request(PROMPT, **sampling))
    assert error.code() == code and message in (error.details() or "")


async def test_text_input_is_refused(vstub: Any) -> None:
    request = pb.GenerateRequest(request_id="t", text="Hello", sampling_params=pb.SamplingParams())
    error = await refused(vstub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "input_ids" in (error.details() or "")


async def test_empty_prompt_and_injected_failure(vstub: Any, tokenizer: Tokenizer) -> None:
    assert (await refused(vstub, make_request([]))).code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await refused(vstub, make_request(prompt(tokenizer, "[ref fail=UNAVAILABLE]")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and error.details() == "injected failure"


async def test_regex_constraint_is_served(vstub: Any, tokenizer: Tokenizer) -> None:
    done = completes(await collect(vstub, make_request(PROMPT, regex="(yes|no)!", stream=False)))[0]
    assert tokenizer.decode(list(done.output_ids)[:-1]) in ("yes!", "no!")


def test_constraint_kinds_map_onto_the_sglang_ones() -> None:
    assert constraint(pb.SamplingParams(json_object=True)) == ("json_schema", JSON_OBJECT_SCHEMA)
    assert constraint(pb.SamplingParams(grammar="g")) == ("ebnf_grammar", "g")
    assert constraint(pb.SamplingParams(json_schema="{}")) == ("json_schema", "{}")
    assert constraint(pb.SamplingParams()) is None


async def test_stall_then_abort_ends_every_choice(start_vllm: StartVllm, tokenizer: Tokenizer) -> None:
    worker, stub = await start_vllm()
    call = stub.Generate(make_request(prompt(tokenizer, "[ref stall=1]"), rid="stalled", n=2))
    assert (await call.read()).HasField("chunk")
    assert await stub.Abort(pb.AbortRequest(request_ids=["stalled", "nobody"])) == pb.AbortResponse()
    rest = []
    while (message := await call.read()) is not grpc.aio.EOF:
        rest.append(message)
    assert await call.code() == grpc.StatusCode.OK
    done = completes(rest)
    assert sorted(done) == [0, 1] and {d.finish_reason for d in done.values()} == {"abort"}
    assert all(d.completion_tokens == 0 and not d.output_ids for d in done.values())
    aborted = worker.engine.record.to_dict()["aborted"]
    assert {"request_id": "stalled", "reason": "", "found": True} in aborted
    assert {"request_id": "nobody", "reason": "", "found": False} in aborted
    assert not worker.engine.live


async def test_abort_during_latency_wait(start_vllm: StartVllm, tokenizer: Tokenizer) -> None:
    worker, stub = await start_vllm(ttft_ms=60_000)
    call = stub.Generate(make_request(prompt(tokenizer, "hi"), rid="slow", stream=False))
    async with asyncio.timeout(5):
        await worker.engine.wait_until(lambda: "slow" in worker.engine.live)
    await stub.Abort(pb.AbortRequest(request_ids=["slow"]))
    assert (await call.read()).complete.finish_reason == "abort"


async def test_requests_are_recorded(start_vllm: StartVllm) -> None:
    worker, stub = await start_vllm()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request = make_request([1, 2, 3], rid="traced")
    _ = [m async for m in stub.Generate(request, metadata=(("traceparent", traceparent),))]
    record = worker.engine.record.to_dict()
    assert record["received"] == ["traced"]
    assert record["recent_requests"][0]["tokenized"]["input_ids"] == [1, 2, 3]
    assert record["metadata"][0]["traceparent"] == traceparent


async def test_the_request_span_is_the_sglang_paths(
    start_vllm: StartVllm, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing._State, "tracer", provider.get_tracer("test"))
    _, stub = await start_vllm()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request = make_request(PROMPT, rid="spanned", max_tokens=2)
    _ = [m async for m in stub.Generate(request, metadata=(("traceparent", traceparent),))]
    (span,) = exporter.get_finished_spans()
    assert span.name == tracing.SPAN_NAME and span.parent is not None
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    attributes = dict(span.attributes or {})
    assert attributes == {"smg.request_id": "spanned", "stream": True, "prompt_tokens": len(PROMPT)}


async def test_health_check(start_vllm: StartVllm) -> None:
    worker, stub = await start_vllm()
    health = await stub.HealthCheck(pb.HealthCheckRequest())
    assert health.healthy and health.message == "ok"
    service = VllmService(worker.engine)
    service.shutting_down = True
    assert not (await service.HealthCheck(pb.HealthCheckRequest(), None)).healthy


async def test_standard_health_names_the_vllm_service(start_vllm: StartVllm) -> None:
    worker, _ = await start_vllm()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        checker = health_pb2_grpc.HealthStub(channel)
        for service in ("", VLLM_SERVICE):
            status = await checker.Check(health_pb2.HealthCheckRequest(service=service))
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await checker.Check(
                health_pb2.HealthCheckRequest(service="sglang.grpc.scheduler.SglangScheduler")
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await sglang_grpc.SglangSchedulerStub(channel).HealthCheck(sglang_pb.HealthCheckRequest())
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert pb.DESCRIPTOR.services_by_name["VllmEngine"].full_name == VLLM_SERVICE


async def test_model_info(start_vllm: StartVllm) -> None:
    worker, stub = await start_vllm()
    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.served_model_name == "Qwen/Qwen3-0.6B" and info.is_generation
    assert list(info.eos_token_ids) == [EOS] and info.vocab_size > 150_000
    assert info.max_context_length == 131072 and info.max_req_input_len == 131072
    assert info.tokenizer_path == info.model_path and info.pad_token_id == 151643
    model = worker.engine.model
    assert (info.model_type, list(info.architectures)) == (model.model_type, list(model.architectures))


async def test_server_info(vstub: Any) -> None:
    before = await vstub.GetServerInfo(pb.GetServerInfoRequest())
    assert before.server_type == "vllm-grpc" and before.data_parallel_size == 1
    assert before.active_requests == 0 and not before.is_paused and before.last_receive_timestamp == 0
    await collect(vstub, make_request(PROMPT, max_tokens=1))
    after = await vstub.GetServerInfo(pb.GetServerInfoRequest())
    assert after.last_receive_timestamp > 0 and after.uptime_seconds >= before.uptime_seconds
    assert (after.block_size, after.max_num_seqs) == (16, 256)


async def test_loads(start_vllm: StartVllm, tokenizer: Tokenizer) -> None:
    _, stub = await start_vllm()
    call = stub.Generate(make_request(prompt(tokenizer, "[ref stall=1]"), rid="busy"))
    await call.read()
    loads = await stub.GetLoads(pb.GetLoadsRequest(include=["core"]))
    assert loads.dp_rank_count == 1 and loads.version and loads.timestamp
    (load,) = loads.loads
    assert (load.dp_rank, load.num_running_reqs, load.num_total_reqs, load.max_running_requests) == (
        0,
        1,
        1,
        256,
    )
    assert load.token_usage > 0 and load.num_used_tokens > 0 and load.max_total_num_tokens > 0
    assert not (await stub.GetLoads(pb.GetLoadsRequest(dp_rank=1))).loads
    assert len((await stub.GetLoads(pb.GetLoadsRequest(dp_rank=0))).loads) == 1
    call.cancel()


async def test_common_rpcs(vstub: Any) -> None:
    parts = [chunk async for chunk in vstub.GetTokenizer(common.GetTokenizerRequest())]
    assert parts[-1].sha256 == hashlib.sha256(b"".join(p.data for p in parts)).hexdigest()
    call = subscribe(vstub)
    long_prompt = list(range(1000, 1040))
    await collect(vstub, make_request(long_prompt, max_tokens=2))
    blocks = stored_blocks(await next_batch(call))
    assert [ids for _, ids in blocks] == [long_prompt[:16], long_prompt[16:32]]
    assert (await vstub.FlushCache(common.FlushCacheRequest())).success
    assert (await next_batch(call)).events[0].HasField("cleared")
    call.cancel()


def test_engine_vllm_needs_grpc_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--mode", "http", "--engine", "vllm"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "usage:" in error and "--engine vllm" in error and "--mode http" in error
    with pytest.raises(ConfigError):
        WorkerConfig(mode="http", engine="vllm")


def test_cli_rejects_an_unknown_engine() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "refworker", "--port", "0", "--engine", "mlx"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=PROJECT_ROOT,
        timeout=30,
    )
    assert result.returncode == 2 and "--engine" in result.stderr


async def test_process_serves_vllm() -> None:
    async with RefWorkerProcs(
        1, "--engine", "vllm", "--script", "filler", "--filler-tokens", "3"
    ) as addresses:
        host, port = addresses[0]
        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            stub = pb_grpc.VllmEngineStub(channel)
            assert (await stub.HealthCheck(pb.HealthCheckRequest(), timeout=5)).healthy
            messages = await collect(stub, make_request([1, 2, 3], rid="proc-1", max_tokens=10, stream=False))
            info = await stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
        assert len(messages[0].complete.output_ids) == 4 and info.server_type == "vllm-grpc"


async def test_pd_roles_need_their_kv_transfer_params_and_the_prefill_hands_out_its_own(
    start_vllm: StartVllm,
) -> None:
    _, decode = await start_vllm(disaggregation_mode="decode")
    error = await refused(decode, make_request(PROMPT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "do_remote_prefill" in (error.details() or "")
    _, prefill = await start_vllm(disaggregation_mode="prefill")
    request = make_request(PROMPT, stream=False, max_tokens=1)
    request.kv_transfer_params_json = '{"do_remote_decode":true,"do_remote_prefill":false}'
    [done] = completes(await collect(prefill, request)).values()
    handle = json.loads(done.kv_transfer_params_json)
    assert handle["do_remote_prefill"] is True and handle["remote_request_id"] == "req-1"
    assert (await refused(prefill, make_request(PROMPT))).code() == grpc.StatusCode.INVALID_ARGUMENT
