"""Reference workers as subprocesses (``python -m refworker --port 0``), for end-to-end tests.

with RefWorkerProcs(2, "--script", "echo") as addrs:        # or: async with RefWorkerProcs(...)
    host, port = addrs[0]
    record = read_record(host, port)
"""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from refworker.control import RECORD_METHOD

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_READY = re.compile(r"refworker ready on (\S+):(\d+)")


class RefWorkerProcs:
    """Start ``count`` workers with ``extra_args``; entering yields their ``(host, port)`` list."""

    def __init__(self, count: int = 1, *extra_args: str, ready_timeout: float = 30.0) -> None:
        self.count = count
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self.procs: list[subprocess.Popen[bytes]] = []
        self.addresses: list[tuple[str, int]] = []

    def start(self) -> list[tuple[str, int]]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "refworker", "--port", "0", *self.extra_args]
        try:
            # All spawned before any is awaited: start-up (imports, tokenizer load) overlaps.
            for _ in range(self.count):
                self.procs.append(
                    subprocess.Popen(command, stdout=subprocess.PIPE, env=env, cwd=PROJECT_ROOT)
                )
            deadline = time.monotonic() + self.ready_timeout
            self.addresses = [_wait_ready(proc, deadline) for proc in self.procs]
        except BaseException:
            self.stop()
            raise
        return self.addresses

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM all, then kill whatever is still running after ``timeout``."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs = []

    def __enter__(self) -> list[tuple[str, int]]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> list[tuple[str, int]]:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def _wait_ready(proc: subprocess.Popen[bytes], deadline: float) -> tuple[str, int]:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                raise RuntimeError(f"refworker exited before ready (code {proc.wait()})")
            if match := _READY.search(line):
                return match.group(1), int(match.group(2))
    raise TimeoutError("refworker did not print its ready line in time")


def read_record(host: str, port: int, timeout: float = 5.0) -> dict[str, Any]:
    """The worker's record (SGLang's ``GetServerInfo.scheduler_info``, or ``refworker.control``'s method on a
    worker serving vLLM's service), with whole numbers back as ints."""
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            info = pb_grpc.SglangSchedulerStub(channel).GetServerInfo(
                pb.GetServerInfoRequest(), timeout=timeout
            )
            struct = info.scheduler_info
        except grpc.RpcError as exc:  # a worker serving vLLM's service: the record has a method of its own
            if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                raise
            read = channel.unary_unary(
                RECORD_METHOD,
                request_serializer=Empty.SerializeToString,
                response_deserializer=Struct.FromString,
            )
            struct = read(Empty(), timeout=timeout)
    record: dict[str, Any] = _ints(MessageToDict(struct))
    return record


def _ints(value: Any) -> Any:
    # google.protobuf.Struct stores every number as a double.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value
