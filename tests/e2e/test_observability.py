"""Metrics and logs of the real command (``smg launch … --log-json --log-dir D --prometheus-port Q``) in
front of two reference workers, driven by the official openai client, then ``/metrics`` scraped and parsed
with prometheus_client's parser and every log line (stderr and the file) parsed as JSON.

One scenario runs once for the module: successful chats and completions (streamed and not), an unknown
model, an invalid parameter, a worker error retried until the attempts run out, a stream that fails after
it began, then a worker killed so that a request is retried on the other one. Every prompt carries a
marker that must never reach the logs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.test_cli import PROJECT_ROOT, free_port, readiness
from tests.fakes.refworker_proc import RefWorkerProcs
from tests.scrape import Scrape

SECRET = f"SECRET-{uuid.uuid4().hex}"  # in every prompt; never in a log line
CHAT = "/v1/chat/completions"
STARTUP_TIMEOUT = 40.0


@dataclass
class Run:
    """What the scenario saw: usages by request id, the scrapes, the log lines."""

    usage: dict[str, Any] = field(default_factory=dict)
    completion_usage: Any = None
    errors: dict[str, Exception] = field(default_factory=dict)
    before_kill: Scrape | None = None
    after_kill: Scrape | None = None
    dead_worker: str = ""
    stderr: list[dict[str, Any]] = field(default_factory=list)
    file: list[dict[str, Any]] = field(default_factory=list)
    raw: str = ""

    def lines(self, request_id: str) -> list[dict[str, Any]]:
        return [line for line in self.stderr if line.get("request_id") == request_id]


def rid(name: str) -> str:
    return f"obs-{name}-{uuid.uuid4().hex[:8]}"


RIDS = {
    name: rid(name) for name in ("a", "b", "c", "d", "unknown", "invalid", "exhausted", "broken", "k1", "k2")
}


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        return Scrape(reply.read().decode())


def settled(port: int, answered: int) -> Scrape:
    """A scrape once ``answered`` chat responses are counted: a stream's client can finish reading before
    its handler returns."""
    deadline = time.monotonic() + 10
    while (got := scrape(port)).value("smg_http_responses_total", path=CHAT) < answered:
        assert time.monotonic() < deadline, "responses not counted"
        time.sleep(0.01)
    return got


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while readiness(port)[0] != 200 or readiness(port)[1]["healthy_workers"] != 2:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def stream_and_close(base_url: str, name: str) -> SimpleNamespace:
    """A streamed chat read to its last chunk by a client that closes the connection at once (as curl
    does): it was answered in full and must be counted and logged as such."""
    messages = [{"role": "user", "content": f"Say hello {SECRET}"}]
    stream = {"stream": True, "stream_options": {"include_usage": True}}
    body = json.dumps({"model": MODEL, "messages": messages, **stream}).encode()
    address = urllib.parse.urlsplit(base_url)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nx-request-id: {RIDS[name]}\r\n\r\n"
    )
    received = b""
    with socket.create_connection((address.hostname, address.port), timeout=20) as sock:
        sock.sendall(head.encode() + body)
        while not received.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of the chunked body
            data = sock.recv(65536)
            assert data, received
            received += data
    events = [line for line in received.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    return SimpleNamespace(**json.loads(events[-2].removeprefix("data: "))["usage"])


def drive(client: openai.OpenAI, run: Run) -> None:
    def chat(name: str, content: str, **kwargs: Any) -> Any:
        return client.chat.completions.create(
            model=kwargs.pop("model", MODEL),
            messages=[{"role": "user", "content": f"{content} {SECRET}"}],
            extra_headers={"x-request-id": RIDS[name]},
            **kwargs,
        )

    for name in ("a", "b"):
        run.usage[name] = chat(name, "Say hello").usage
    chunks = list(chat("c", "Say hello", stream=True, stream_options={"include_usage": True}))
    run.usage["c"] = chunks[-1].usage
    run.usage["d"] = stream_and_close(str(client.base_url).rstrip("/"), "d")
    run.completion_usage = client.completions.create(model=MODEL, prompt=f"hi {SECRET}", max_tokens=5).usage
    for name, kwargs in (("unknown", {"model": "no/such-model"}), ("invalid", {"temperature": 5})):
        with pytest.raises(openai.APIStatusError) as caught:
            chat(name, "x", **kwargs)
        run.errors[name] = caught.value
    with pytest.raises(openai.APIStatusError) as caught:
        chat("exhausted", "[ref fail=unavailable] x")  # every attempt fails: retried, then exhausted
    run.errors["exhausted"] = caught.value
    with pytest.raises(openai.APIError) as broken:
        list(chat("broken", "[ref fail_after=3] x", stream=True))  # in-band error after 3 chunks
    run.errors["broken"] = broken.value


@pytest.fixture(scope="module")
def run(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("observability")
    port, metrics_port = free_port(), free_port()
    procs = RefWorkerProcs(2)
    workers = procs.start()
    stderr = tmp / "stderr.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "adapters.cli", "launch",
        "--worker-urls", *(f"grpc://{h}:{p}" for h, p in workers), "--model-path", str(model_dir),
        "--policy", "round_robin", "--host", "127.0.0.1", "--port", str(port),
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
        "--log-json", "--log-level", "info", "--log-dir", str(tmp / "logs"),
        "--retry-max-retries", "3", "--retry-initial-backoff-ms", "1", "--retry-max-backoff-ms", "2",
    ]  # fmt: skip
    with stderr.open("wb") as sink:
        proc = subprocess.Popen(command, stderr=sink, cwd=PROJECT_ROOT, env=env)
    result = Run()
    try:
        wait_ready(proc, port, stderr)
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0) as client:
            drive(client, result)
            result.before_kill = settled(metrics_port, 8)
            procs.procs[0].kill()  # its requests fail now and are retried on the other worker
            procs.procs[0].wait()
            result.dead_worker = "grpc://{}:{}".format(*workers[0])
            for name in ("k1", "k2"):
                client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": SECRET}],
                    extra_headers={"x-request-id": RIDS[name]},
                )
        result.after_kill = settled(metrics_port, 10)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        procs.stop()
    result.raw = stderr.read_text() + (tmp / "logs" / "smg.log").read_text()
    result.stderr = [json.loads(line) for line in stderr.read_text().splitlines()]
    result.file = [json.loads(line) for line in (tmp / "logs" / "smg.log").read_text().splitlines()]
    yield result


# ---- metrics ------------------------------------------------------------------------------------------


def test_http_metrics(run: Run) -> None:
    got = run.before_kill
    assert got is not None
    assert got.families["smg_http_requests"].type == "counter"
    assert got.families["smg_http_request_duration_seconds"].type == "histogram"
    assert got.families["smg_http_inflight_request_age_count"].type == "gauge"
    assert len(got.labels("smg_http_inflight_request_age_count")) == 12
    assert got.value("smg_http_inflight_request_age_count") == 0  # settled: nothing in flight
    assert got.value("smg_http_requests_total", method="POST", path=CHAT) == 8
    assert got.value("smg_http_request_duration_seconds_count", method="POST", path=CHAT) == 8
    responses = {
        ("200", ""): 4,
        ("200", "stream_error"): 1,
        ("404", "model_not_found"): 1,
        ("400", run.errors["invalid"].response.headers["x-smg-error-code"]): 1,
        ("503", run.errors["exhausted"].response.headers["x-smg-error-code"]): 1,
    }
    for (status, code), count in responses.items():
        assert got.value("smg_http_responses_total", path=CHAT, status_code=status, error_code=code) == count
    assert (
        got.value("smg_http_responses_total", path="/v1/completions", status_code="200", error_code="") == 1
    )
    assert got.value("smg_http_responses_total", path="/readiness", status_code="200") >= 1
    assert got.label_names("smg_http_responses") == {("error_code", "path", "status_code")}
    assert got.families["smg_http_connections_active"].type == "gauge"


def test_router_metrics_match_what_the_client_saw(run: Run) -> None:
    got = run.before_kill
    assert got is not None
    qwen = {"router_type": "grpc", "backend_type": "regular", "model": MODEL, "endpoint": "chat"}
    assert got.label_names("smg_router_requests") == {
        ("backend_type", "connection_mode", "endpoint", "model", "router_type", "streaming")
    }
    assert got.value("smg_router_requests_total", **qwen, connection_mode="grpc", streaming="false") == 3
    assert got.value("smg_router_requests_total", **qwen, streaming="true") == 3
    # An unknown model is refused before the data plane (HTTP 404 model_not_found); no client label values.
    assert "no/such-model" not in {value for s in got.samples for value in s.labels.values()}
    usages = [run.usage[n] for n in "abcd"]
    assert got.value("smg_router_tokens_total", **qwen, token_type="input") == sum(
        u.prompt_tokens for u in usages
    )
    assert got.value("smg_router_tokens_total", **qwen, token_type="output") == sum(
        u.completion_tokens for u in usages
    )
    completions = {"endpoint": "completions", "model": MODEL}
    assert (
        got.value("smg_router_tokens_total", **completions, token_type="input")
        == run.completion_usage.prompt_tokens
    )
    assert got.value("smg_router_tokens_total", **completions, token_type="output") == 5
    for name in (
        "smg_router_ttft_seconds",
        "smg_router_tpot_seconds",
        "smg_router_generation_duration_seconds",
    ):
        assert got.families[name].type == "histogram"
        assert got.label_names(name) == {("backend_type", "endpoint", "model", "router_type")}
        assert got.value(f"{name}_count", **qwen) == 2  # the two streams that ended well
    assert got.value("smg_router_request_duration_seconds_count", **qwen) == 4
    assert got.value("smg_router_request_errors_total", **qwen, error_type="backend_error") == 2


def test_worker_retry_and_breaker_metrics(run: Run) -> None:
    got, after = run.before_kill, run.after_kill
    assert got is not None and after is not None
    assert got.value("smg_worker_retries_total", worker_type="regular", endpoint="chat") == 2
    assert got.value("smg_worker_retries_exhausted_total", worker_type="regular", endpoint="chat") == 1
    assert got.value("smg_worker_retry_backoff_seconds_count", attempt="1") == 1
    assert got.value("smg_worker_retry_backoff_seconds_count", attempt="2") == 1
    # a, b, c, d, three attempts of "exhausted", "broken"; and the completion
    selection = {"worker_type": "regular", "connection_mode": "grpc", "model": MODEL, "policy": "round_robin"}
    assert got.value("smg_worker_selection_total", **selection) == 9
    assert got.value("smg_worker_cb_outcomes_total", outcome="failure") == 4  # 3 refused + 1 broken stream
    assert got.value("smg_worker_cb_outcomes_total", outcome="success") == 5
    assert got.value("smg_worker_pool_size", worker_type="regular", connection_mode="grpc", model=MODEL) == 2
    for family, value in (
        ("smg_worker_health", 1),
        ("smg_worker_cb_state", 0),
        ("smg_worker_requests_active", 0),
    ):
        assert got.families[family].type == "gauge"
        assert [s.value for s in got.families[family].samples] == [value, value]
    # The killed worker: one of the two requests after it went there first and was retried on the other.
    assert after.value("smg_worker_retries_total", endpoint="chat") >= 3
    assert after.value("smg_worker_cb_outcomes_total", worker=run.dead_worker, outcome="failure") >= (
        got.value("smg_worker_cb_outcomes_total", worker=run.dead_worker, outcome="failure") + 1
    )
    assert after.value("smg_worker_errors_total", error_type="backend_error") >= 5
    assert after.value("smg_tokenizer_cache_lookups_total", layer="l0") >= 1
    assert after.value("process_resident_memory_bytes") > 0


# ---- logs ---------------------------------------------------------------------------------------------


def test_every_line_is_one_json_object_and_the_file_has_them_too(run: Run) -> None:
    assert run.stderr and run.file
    for line in run.stderr + run.file:
        assert {"timestamp", "level", "logger", "message"} <= line.keys(), line
        assert line["level"] in ("INFO", "WARN", "ERROR"), line  # --log-level info: no DEBUG
    assert [line["message"] for line in run.file] == [line["message"] for line in run.stderr]


def test_request_ids_on_the_lines_of_their_requests(run: Run) -> None:
    for name in ("a", "b", "c", "d", "unknown", "invalid", "k1", "k2"):
        access = [line for line in run.lines(RIDS[name]) if line["logger"] == "smg.access"]
        assert len(access) == 1, (name, run.lines(RIDS[name]))
        assert (access[0]["method"], access[0]["path"]) == ("POST", CHAT)
    assert [line["status"] for line in run.lines(RIDS["unknown"]) if line["logger"] == "smg.access"] == [404]
    retries = [line for line in run.lines(RIDS["exhausted"]) if line["logger"] == "dataplane.pipeline"]
    assert len(retries) == 2 and all(line["message"].startswith("retrying") for line in retries)
    # Logged by the task that produces the stream's events, which inherits the request's context.
    broken = [line for line in run.lines(RIDS["broken"]) if line["logger"] == "adapters.sse"]
    assert len(broken) == 1 and broken[0]["level"] == "WARN"
    assert not [
        line
        for line in run.stderr
        if line["message"].startswith("gateway listening") and "request_id" in line
    ]


def test_prompts_never_reach_the_logs(run: Run) -> None:
    assert SECRET not in run.raw
