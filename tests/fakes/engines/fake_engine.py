"""Stand-in engine for ``smg serve`` tests: records how it was started, then behaves as told.

``tests/fakes/engines`` goes first on the children's PYTHONPATH, so the real engine commands
(``python -m sglang.launch_server …``) run the stand-ins next to this module, which all call ``main``.

Environment:
- ``FAKE_ENGINE_RECORD_DIR``: write ``<pid>.json`` there (argv, CUDA_VISIBLE_DEVICES, pids) on start.
- ``FAKE_ENGINE_BEHAVIOR``: ``serve`` (default: gRPC health SERVING, or ``GET /health`` 200 in HTTP mode,
  until SIGTERM), ``exit:<code>`` (complain on stderr and exit at once), ``hang`` (never serve, ignore
  SIGTERM: only SIGKILL ends it).
- ``FAKE_ENGINE_GRANDCHILD=1``: also start a long ``sleep`` in the same process group that ignores
  SIGTERM and is never stopped, as an engine's leftover subprocess would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main(module: str) -> None:
    args = sys.argv[1:]
    grpc_mode = "--grpc-mode" in args or "--grpc" in args or module == "vllm.entrypoints.grpc_server"
    host, port = _value(args, "--host"), int(_value(args, "--port"))
    grandchild = _start_grandchild() if os.environ.get("FAKE_ENGINE_GRANDCHILD") == "1" else None
    _record(module, args, grandchild)
    behavior = os.environ.get("FAKE_ENGINE_BEHAVIOR", "serve")
    if behavior.startswith("exit:"):
        print(f"fake {module}: CUDA out of memory (simulated)", file=sys.stderr, flush=True)
        sys.exit(int(behavior.removeprefix("exit:")))
    if behavior == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stop_server = _serve_grpc(host, port) if grpc_mode else _serve_http(host, port)
    print(f"fake {module} ready on {host}:{port}", flush=True)
    stopped.wait()
    stop_server()


def _value(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _start_grandchild() -> int:
    # SIG_IGN survives exec: this ``sleep`` ignores SIGTERM, so only a SIGKILL to the group ends it.
    ignore_term = lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)  # noqa: E731
    return subprocess.Popen(["sleep", "1000"], preexec_fn=ignore_term).pid


def _record(module: str, args: list[str], grandchild: int | None) -> None:
    folder = os.environ.get("FAKE_ENGINE_RECORD_DIR")
    if not folder:
        return
    record = {
        "module": module,
        "argv": args,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pythonunbuffered": os.environ.get("PYTHONUNBUFFERED"),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "grandchild": grandchild,
    }
    target = Path(folder) / f"{os.getpid()}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(target)  # readers never see half a record


def _serve_grpc(host: str, port: int) -> Callable[[], object]:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return lambda: server.stop(0)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def _serve_http(host: str, port: int) -> Callable[[], object]:
    server = ThreadingHTTPServer((host, port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.shutdown
