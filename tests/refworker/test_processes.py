"""The real entrypoint as a subprocess, and the helper other suites use to start workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from tests.fakes.refworker_proc import PROJECT_ROOT, RefWorkerProcs, read_record


def test_cli_prints_ready_line_and_exits_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "refworker", "--port", "0", "--script", "echo"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("refworker ready on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = pb_grpc.SglangSchedulerStub(channel).HealthCheck(pb.HealthCheckRequest(), timeout=5)
        assert health.healthy
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_cli_rejects_bad_configuration() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "refworker", "--port", "0", "--tokens-per-chunk", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=PROJECT_ROOT,
        timeout=30,
    )
    assert result.returncode == 2 and "tokens_per_chunk" in result.stderr


async def test_refworker_procs_start_serve_and_record() -> None:
    async with RefWorkerProcs(2, "--script", "filler", "--filler-tokens", "3") as addresses:
        assert len(addresses) == 2 and addresses[0] != addresses[1]
        host, port = addresses[1]
        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            stub = pb_grpc.SglangSchedulerStub(channel)
            request = pb.GenerateRequest(
                request_id="proc-1",
                tokenized=pb.TokenizedInput(input_ids=[1, 2, 3]),
                sampling_params=pb.SamplingParams(n=1, max_new_tokens=10),
            )
            messages = [m async for m in stub.Generate(request)]
        assert len(messages[0].complete.output_ids) == 4
        record = read_record(host, port)
        assert record["received"] == ["proc-1"]
        assert record["recent_requests"][0]["tokenized"]["input_ids"] == [1, 2, 3]
        assert read_record(*addresses[0])["received"] == []
