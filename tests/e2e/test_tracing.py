"""Tracing end to end: reference workers and gateways as processes exporting through a real OTLP
collector (``rotel``, from PyPI) to a trace receiver this module runs (OpenTelemetry's own
``TraceService`` on grpcio). The official openai client sends a ``traceparent``; the assertions walk the
received spans' parent ids from the client's span to the worker's.

Both gateways run at ``--log-level warn``: unlike SMG 1.13, exporting and propagating do not depend on it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.e2e.conftest import CLIENT_TIMEOUT, MODEL, new_rid
from tests.fakes.refworker_proc import RefWorkerProcs, read_record

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HTTP_MODEL = "ref/http-model"
STAGES = ("chat_template", "tokenize", "select_worker", "generate", "parse")
WAIT = 15.0
# Short export delays: spans leave within ~50 ms instead of 5 s.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


# ---- the trace receiver at the end of the pipeline ---------------------------------------------------


@dataclass(frozen=True)
class Received:
    service: str
    span: Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent(self) -> str:
        return self.span.parent_span_id.hex()

    def attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kv in self.span.attributes:
            kind = kv.value.WhichOneof("value")
            value = getattr(kv.value, kind)
            out[kv.key] = (
                [getattr(v, v.WhichOneof("value")) for v in value.values] if kind == "array_value" else value
            )
        return out


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC trace endpoint that keeps every span it receives, by trace id."""

    def __init__(self) -> None:
        self._spans: dict[str, list[Received]] = {}
        self._changed = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def Export(self, request: Any, context: Any) -> Any:
        with self._changed:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self._spans.setdefault(span.trace_id.hex(), []).append(Received(service, span))
            self._changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[Received]:
        with self._changed:
            return list(self._spans.get(trace_id, ()))

    def wait(
        self, trace_id: str, done: Callable[[list[Received]], bool], timeout: float = WAIT
    ) -> list[Received]:
        """The trace's spans once ``done`` holds for them (fails after ``timeout``)."""
        with self._changed:
            ok = self._changed.wait_for(lambda: done(self._spans.get(trace_id, [])), timeout)
            spans = list(self._spans.get(trace_id, ()))
        assert ok, f"trace {trace_id} incomplete after {timeout} s: {sorted(s.name for s in spans)}"
        return spans

    def __enter__(self) -> TraceReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)


def has_spans(*names: str) -> Callable[[list[Received]], bool]:
    return lambda spans: set(names) <= {s.name for s in spans}


def one(spans: list[Received], name: str) -> Received:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [(s.service, s.name) for s in spans])
    return found[0]


# ---- processes: the collector and the gateways --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(
    check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.05)


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def rotel(forward_to: int, directory: Path) -> Iterator[tuple[int, int]]:
    """rotel's OTLP collector (receivers on free ports) forwarding traces to ``forward_to``; yields its
    OTLP/gRPC and OTLP/HTTP receiver ports."""
    spec = importlib.util.find_spec("rotel")
    assert spec is not None and spec.origin is not None, "rotel is a dev dependency: pip install -e '.[dev]'"
    binary = Path(spec.origin).parent / "rotel-agent"
    grpc_port, http_port = free_port(), free_port()
    command = [
        str(binary), "start",
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}", "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
        "--exporter", "otlp", "--otlp-exporter-endpoint", f"http://127.0.0.1:{forward_to}",
        "--otlp-exporter-protocol", "grpc", "--otlp-exporter-compression", "none",
        "--batch-timeout", "20ms",
        "--pid-file", str(directory / "rotel.pid"), "--log-file", str(directory / "rotel.log"),
    ]  # fmt: skip
    with (directory / "rotel.out").open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: accepts(grpc_port) and accepts(http_port), "rotel", proc)
        yield grpc_port, http_port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class GatewayProc:
    """``python -m adapters.cli launch …`` as users run it."""

    def __init__(self, args: list[str], log: Path, env_overrides: dict[str, str] | None = None) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(FAST_EXPORT | (env_overrides or {})))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        command = [
            sys.executable, "-m", "adapters.cli", "launch", "--host", "127.0.0.1", "--port", str(self.port),
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
        ]  # fmt: skip
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*command, *args], stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=env
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self, healthy: int) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readiness", timeout=2) as reply:
                return reply.status == 200 and json.loads(reply.read())["healthy_workers"] == healthy
        except (OSError, urllib.error.HTTPError):
            return False

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key="none", max_retries=0, timeout=CLIENT_TIMEOUT
        )

    def stop(self) -> int:
        """SIGTERM, as at shutdown: the gateway flushes its spans before it exits."""
        self.proc.terminate()
        return self.proc.wait(timeout=20)


@dataclass(frozen=True)
class Stack:
    receiver: TraceReceiver
    collector: str  # host:port of its OTLP/gRPC receiver
    collector_http: str  # host:port of its OTLP/HTTP receiver
    grpc_worker: tuple[str, int]
    http_worker: tuple[str, int]
    traced: GatewayProc  # sampling ratio 1 (the default)
    unsampled: GatewayProc  # --trace-sampling-ratio 0


@pytest.fixture(scope="module")
def stack(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("tracing")
    with (
        TraceReceiver() as receiver,
        rotel(receiver.port, logs) as (collector, collector_http),
        pytest.MonkeyPatch.context() as mp,
    ):
        for key, value in FAST_EXPORT.items():
            mp.setenv(key, value)
        endpoint = f"127.0.0.1:{collector}"
        grpc_worker = RefWorkerProcs(1, "--otlp-traces-endpoint", endpoint)
        http_worker = RefWorkerProcs(
            1, "--mode", "http", "--served-model-name", HTTP_MODEL, "--otlp-traces-endpoint", endpoint
        )
        try:
            (g,), (h,) = grpc_worker.start(), http_worker.start()
            common = [
                "--worker-urls", f"grpc://{g[0]}:{g[1]}", f"http://{h[0]}:{h[1]}",
                "--model-path", str(model_dir), "--policy", "round_robin", "--log-level", "warn",
                "--enable-trace", "--otlp-traces-endpoint", endpoint,
            ]  # fmt: skip
            traced = GatewayProc(common, logs / "traced.log")
            unsampled = GatewayProc([*common, "--trace-sampling-ratio", "0"], logs / "unsampled.log")
            try:
                for gateway in (traced, unsampled):
                    wait_until(lambda gw=gateway: gw.ready(2), "gateway", gateway.proc)
                yield Stack(receiver, endpoint, f"127.0.0.1:{collector_http}", g, h, traced, unsampled)
            finally:
                for gateway in (traced, unsampled):
                    if gateway.proc.poll() is None:
                        gateway.stop()
        finally:
            grpc_worker.stop()
            http_worker.stop()


def new_trace() -> tuple[str, str, str]:
    """(trace id, the client's span id, its sampled traceparent)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def worker_metadata(stack: Stack, rid: str) -> dict[str, str]:
    """The gRPC metadata the worker received with request ``rid``."""
    record = read_record(*stack.grpc_worker)
    ids = [r["request_id"] for r in record["recent_requests"]]
    index = next(i for i, engine_id in enumerate(ids) if engine_id.startswith(rid))
    metadata: dict[str, str] = record["metadata"][index]
    return metadata


def assert_request_trace(spans: list[Received], client_span: str) -> tuple[Received, Received]:
    """One SERVER span below the client's, every stage below it, the worker's below ``generate``;
    returns (server, generate)."""
    server = one(spans, "POST /v1/chat/completions")
    assert (server.service, server.span.kind, server.parent) == ("smg", Span.SPAN_KIND_SERVER, client_span)
    for name in STAGES:
        stage = one(spans, name)
        assert (stage.service, stage.parent) == ("smg", server.id), name
        assert server.span.start_time_unix_nano <= stage.span.start_time_unix_nano
        assert stage.span.end_time_unix_nano <= server.span.end_time_unix_nano
    generate = one(spans, "generate")
    assert generate.span.kind == Span.SPAN_KIND_CLIENT
    worker = one(spans, "refworker.generate")
    assert (worker.service, worker.span.kind, worker.parent) == (
        "refworker",
        Span.SPAN_KIND_SERVER,
        generate.id,
    )
    return server, generate


# ---- tests ------------------------------------------------------------------------------------------


async def test_one_trace_from_the_client_through_the_gateway_to_the_worker(stack: Stack) -> None:
    trace_id, client_span, traceparent = new_trace()
    rid = new_rid("trace")
    async with stack.traced.client() as client:
        reply = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=12,
            temperature=0.5,
            extra_headers={"traceparent": traceparent, "x-request-id": rid},
        )
    spans = stack.receiver.wait(
        trace_id, has_spans(*STAGES, "POST /v1/chat/completions", "refworker.generate")
    )
    server, generate = assert_request_trace(spans, client_span)
    assert reply.usage is not None
    attributes = generate.attributes()
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["gen_ai.request.max_tokens"] == 12
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert attributes["gen_ai.response.finish_reasons"] == [reply.choices[0].finish_reason]
    assert attributes["smg.request_id"].startswith(rid)
    assert attributes["server.port"] == stack.grpc_worker[1]
    assert [e.name for e in generate.span.events] == ["first_token"]
    assert server.attributes()["http.response.status_code"] == 200
    assert server.attributes()["smg.request_id"] == rid
    # What went over the wire: the gateway's own generate span, not the client's traceparent.
    assert worker_metadata(stack, rid)["traceparent"] == f"00-{trace_id}-{generate.id}-01"


async def test_a_streamed_request_is_one_trace_with_its_first_token(stack: Stack) -> None:
    trace_id, client_span, traceparent = new_trace()
    async with stack.traced.client() as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": traceparent},
        )
        chunks = [chunk async for chunk in stream]
    usage = chunks[-1].usage
    assert usage is not None
    spans = stack.receiver.wait(
        trace_id, has_spans(*STAGES, "POST /v1/chat/completions", "refworker.generate")
    )
    _, generate = assert_request_trace(spans, client_span)
    attributes = generate.attributes()
    assert attributes["smg.stream"] is True
    assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    first_token = [e for e in generate.span.events if e.name == "first_token"]
    assert len(first_token) == 1
    assert (
        generate.span.start_time_unix_nano < first_token[0].time_unix_nano < generate.span.end_time_unix_nano
    )


async def test_a_worker_failure_marks_the_spans_failed(stack: Stack) -> None:
    trace_id, client_span, traceparent = new_trace()
    async with stack.traced.client() as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "[ref fail=INVALID_ARGUMENT]"}],
                extra_headers={"traceparent": traceparent},
            )
    names = ("POST /v1/chat/completions", "generate", "refworker.generate")
    spans = stack.receiver.wait(trace_id, has_spans(*names))
    server, generate, worker = (one(spans, name) for name in names)
    assert server.parent == client_span and generate.parent == server.id and worker.parent == generate.id
    assert generate.span.status.code == Status.STATUS_CODE_ERROR
    assert "INVALID_ARGUMENT" in generate.span.status.message
    assert generate.attributes()["error.type"] == "worker_error"
    assert worker.span.status.code == Status.STATUS_CODE_ERROR
    # A 4xx is the client's doing: the SERVER span records it without failing (HTTP semantic conventions).
    assert server.attributes()["http.response.status_code"] == 400
    assert server.span.status.code == Status.STATUS_CODE_UNSET


async def test_http_workers_join_the_trace_below_the_attempt_span(stack: Stack) -> None:
    trace_id, client_span, traceparent = new_trace()
    async with stack.traced.client() as client:
        await client.chat.completions.create(
            model=HTTP_MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": traceparent},
        )
    spans = stack.receiver.wait(
        trace_id, has_spans("POST /v1/chat/completions", "generate", "refworker.generate")
    )
    server = one(spans, "POST /v1/chat/completions")
    attempt = one(spans, "generate")
    worker = one(spans, "refworker.generate")
    assert server.parent == client_span
    assert (attempt.service, attempt.span.kind, attempt.parent) == ("smg", Span.SPAN_KIND_CLIENT, server.id)
    attributes = attempt.attributes()
    assert attributes["gen_ai.request.model"] == HTTP_MODEL
    assert attributes["server.port"] == stack.http_worker[1]
    assert attributes["http.response.status_code"] == 200
    assert attempt.span.status.code == Status.STATUS_CODE_UNSET
    assert (worker.service, worker.parent) == ("refworker", attempt.id)


async def test_sampling_zero_exports_nothing_but_still_propagates(stack: Stack) -> None:
    rid_new, rid_unsampled = new_rid("root"), new_rid("unsampled")
    unsampled_trace, unsampled_span = secrets.token_hex(16), secrets.token_hex(8)
    barrier_trace, barrier_span, barrier = new_trace()
    async with stack.unsampled.client() as client:
        for rid, headers in (
            (rid_new, {}),  # a new trace: ratio 0 samples it out
            (rid_unsampled, {"traceparent": f"00-{unsampled_trace}-{unsampled_span}-00"}),
        ):
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-request-id": rid, **headers},
            )
        # A caller that sampled its trace is followed (parent-based): this one is exported, and behind it
        # everything the gateway and the worker had recorded before.
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers={"traceparent": barrier}
        )
    spans = stack.receiver.wait(
        barrier_trace, has_spans(*STAGES, "POST /v1/chat/completions", "refworker.generate")
    )
    assert_request_trace(spans, barrier_span)

    new_context = worker_metadata(stack, rid_new)["traceparent"].split("-")
    # A new trace id, flags without the sampled bit (the SDK may set W3C level 2's "random" bit, 0x02).
    assert len(new_context[1]) == 32 and new_context[1] != "0" * 32 and not int(new_context[3], 16) & 1
    version, trace_id, parent, flags = worker_metadata(stack, rid_unsampled)["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", unsampled_trace, "00")
    assert parent not in (unsampled_span, "0" * 16)  # the gateway's own (unrecorded) span
    assert stack.receiver.trace(new_context[1]) == []
    assert stack.receiver.trace(unsampled_trace) == []


def test_the_gateway_flushes_its_spans_on_exit(stack: Stack, model_dir: Path, tmp_path: Path) -> None:
    """With a one-minute export delay only the flush at shutdown can deliver the span in time."""
    trace_id, client_span, traceparent = new_trace()
    host, port = stack.grpc_worker
    args = [
        "--worker-urls", f"grpc://{host}:{port}", "--model-path", str(model_dir), "--log-level", "warn",
        "--enable-trace", "--otlp-traces-endpoint", stack.collector,
    ]  # fmt: skip
    gateway = GatewayProc(args, tmp_path / "gateway.log", {"OTEL_BSP_SCHEDULE_DELAY": "60000"})
    try:
        wait_until(lambda: gateway.ready(1), "gateway", gateway.proc)
        request = urllib.request.Request(
            f"{gateway.url}/v1/tokenize",
            data=b'{"model": "%s", "prompt": "hi"}' % MODEL.encode(),
            headers={"content-type": "application/json", "traceparent": traceparent},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200
    finally:
        assert gateway.stop() == 0
    spans = stack.receiver.wait(trace_id, has_spans("POST /v1/tokenize"))
    assert one(spans, "POST /v1/tokenize").parent == client_span


def test_spans_also_travel_over_otlp_http(stack: Stack, model_dir: Path, tmp_path: Path) -> None:
    trace_id, client_span, traceparent = new_trace()
    host, port = stack.grpc_worker
    args = [
        "--worker-urls", f"grpc://{host}:{port}", "--model-path", str(model_dir), "--log-level", "warn",
        "--enable-trace", "--otlp-traces-endpoint", stack.collector_http,
        "--otlp-traces-protocol", "http/protobuf",
    ]  # fmt: skip
    gateway = GatewayProc(args, tmp_path / "gateway.log")
    try:
        wait_until(lambda: gateway.ready(1), "gateway", gateway.proc)
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
        with client:
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Say hello"}],
                extra_headers={"traceparent": traceparent},
            )
        spans = stack.receiver.wait(
            trace_id, has_spans(*STAGES, "POST /v1/chat/completions", "refworker.generate")
        )
        assert_request_trace(spans, client_span)
    finally:
        assert gateway.stop() == 0
