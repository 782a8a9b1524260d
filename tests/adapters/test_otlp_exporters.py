"""The SDK's OTLP exporters with our encoder in front deliver what the SDK's own encoder would: a real
OTLP/gRPC server (OpenTelemetry's ``TraceService`` on grpcio) and a real HTTP server on loopback parse
what they receive, compared with ``encode_spans``."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from adapters.otlp_encoder import GrpcSpanExporter, HttpSpanExporter

RESOURCE = Resource.create({"service.name": "smg"})


def spans() -> list[ReadableSpan]:
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    server = SpanContext(trace_id, 0xB7AD, is_remote=False, trace_flags=TraceFlags(1))
    return [
        ReadableSpan(
            "tokenize",
            SpanContext(trace_id, 0x1234, is_remote=False, trace_flags=TraceFlags(1)),
            parent=server,
            resource=RESOURCE,
            attributes={"gen_ai.request.model": "qwen", "smg.request_id": "chatcmpl-1"},
            start_time=1_700_000_000_000_000_000,
            end_time=1_700_000_000_000_050_000,
        ),
        ReadableSpan(
            "POST /v1/chat/completions",
            server,
            kind=SpanKind.SERVER,
            resource=RESOURCE,
            attributes={"http.response.status_code": 200},
            start_time=1_700_000_000_000_000_000,
            end_time=1_700_000_000_001_000_000,
        ),
    ]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.metadata: list[dict[str, str]] = []

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[Receiver, int]]:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(grace=None)


class Posts(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]]
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_receiver() -> Iterator[tuple[type[Posts], str]]:
    handler = type("Handler", (Posts,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()
    server.server_close()


def test_the_grpc_exporter_sends_what_the_sdk_would(grpc_receiver: tuple[Receiver, int]) -> None:
    receiver, port = grpc_receiver
    exporter = GrpcSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, headers={"x-team": "ops"})
    batch = spans()
    try:
        assert exporter.export(batch) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert receiver.requests == [encode_spans(batch)]
    assert receiver.metadata[0]["x-team"] == "ops"


def test_the_http_exporter_posts_what_the_sdk_would(http_receiver: tuple[type[Posts], str]) -> None:
    handler, url = http_receiver
    exporter = HttpSpanExporter(endpoint=url, headers={"x-team": "ops"})
    batch = spans()
    try:
        assert exporter.export(batch) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    [(path, headers, body)] = handler.received
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["x-team"] == "ops"
    assert ExportTraceServiceRequest.FromString(body) == encode_spans(batch)


def test_the_http_exporter_compresses_as_configured(http_receiver: tuple[type[Posts], str]) -> None:
    handler, url = http_receiver
    exporter = HttpSpanExporter(endpoint=url, compression=Compression.Gzip)
    batch = spans()
    try:
        assert exporter.export(batch) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    [(_, headers, body)] = handler.received
    assert headers["content-encoding"] == "gzip"
    assert ExportTraceServiceRequest.FromString(gzip.decompress(body)) == encode_spans(batch)


def test_the_http_exporter_reports_a_refused_batch(http_receiver: tuple[type[Posts], str]) -> None:
    handler, url = http_receiver
    handler.status = 400  # not retried: the collector refused the batch for good
    exporter = HttpSpanExporter(endpoint=url)
    try:
        assert exporter.export(spans()) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert len(handler.received) == 1


def test_the_http_exporter_drops_an_oversized_batch_without_sending_it(
    http_receiver: tuple[type[Posts], str],
) -> None:
    handler, url = http_receiver
    exporter = HttpSpanExporter(endpoint=url, max_request_size=64)
    try:
        assert exporter.export(spans()) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert handler.received == []


def test_the_http_exporter_refuses_to_export_after_shutdown(http_receiver: tuple[type[Posts], str]) -> None:
    handler, url = http_receiver
    exporter = HttpSpanExporter(endpoint=url)
    exporter.shutdown()
    assert exporter.export(spans()) is SpanExportResult.FAILURE
    assert handler.received == []
