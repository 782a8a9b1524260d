"""Processes the benchmark starts: reference workers, the two gateways, load generators.

Every process gets its own session (process group) and is stopped with SIGTERM to the whole group, then
SIGKILL after a grace period. ``stop_all()`` runs at exit, so nothing outlives the benchmark.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv" / "bin" / "python"
SMG_VENV = ROOT / ".bench" / "smg-venv"
SMG_VERSION = "1.13.0"

_live: list[Proc] = []


class Proc:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.cmd, self.log = name, cmd, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        _live.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        if self in _live:
            _live.remove(self)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; make sure nothing else of its group is left.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            break


def stop_all() -> None:
    for proc in reversed(list(_live)):
        proc.stop(grace=5.0)


atexit.register(stop_all)


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _on_signal)


@contextlib.contextmanager
def bench_lock(timeout: float) -> Iterator[None]:
    """One benchmark at a time on this box: two runs at once would each measure the other's load."""
    path = ROOT / ".bench" / "bench.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.time() + timeout
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise SystemExit(f"another benchmark still holds {path} after {timeout:.0f}s") from None
                if not told:
                    handle.seek(0)
                    print(
                        f"waiting for another benchmark run to finish ({handle.read().strip()}) ...",
                        flush=True,
                    )
                    told = True
                time.sleep(1.0)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_locked(main: Callable[[], int], timeout: float = 1800) -> NoReturn:
    """A benchmark's entry point: under the box's bench lock, every started process stopped at the end."""
    try:
        with bench_lock(timeout=timeout):
            sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; stopping every process started", file=sys.stderr)
        sys.exit(130)
    finally:
        stop_all()


def write_results(out: Path, data: Any, text: str, logs: Path) -> None:
    """The run's figures as JSON at ``out`` (paths as text) and the printed table beside it (``.txt``)."""
    out.write_text(json.dumps(data, indent=1, default=str))
    out.with_suffix(".txt").write_text(text + "\n")
    print(f"\nwrote {out} (+ .txt); logs in {logs}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---- reference workers -------------------------------------------------------------------------------


def start_worker(name: str, tokens_per_chunk: int, log: Path, model_dir: Path) -> tuple[Proc, int]:
    cmd = [
        str(VENV_PY), "-m", "refworker", "--port", "0", "--model-path", str(model_dir),
        "--script", "filler", "--filler-tokens", "4096", "--tokens-per-chunk", str(tokens_per_chunk),
        "--ttft-ms", "0", "--itl-ms", "0", "--log-level", "warn", "--loop", "uvloop",
    ]  # fmt: skip
    proc = Proc(name, cmd, log)
    deadline = time.time() + 60
    while time.time() < deadline:
        if match := re.search(r"refworker ready on [^\s:]+:(\d+)", proc.tail(50)):
            return proc, int(match.group(1))
        if not proc.alive():
            break
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{name} did not start:\n{proc.tail()}")


def start_workers(count: int, args: list[str], logs: Path, prefix: str = "worker") -> list[tuple[Proc, int]]:
    """``count`` reference workers with ``args`` (after ``--port 0``), all spawned before any is awaited."""
    procs = [
        Proc(
            f"{prefix}{i + 1}",
            [str(VENV_PY), "-m", "refworker", "--port", "0", *args],
            logs / f"{prefix}{i + 1}.log",
        )
        for i in range(count)
    ]
    started: list[tuple[Proc, int]] = []
    deadline = time.time() + 60
    try:
        for proc in procs:
            while True:
                if match := re.search(r"refworker ready on [^\s:]+:(\d+)", proc.tail(50)):
                    started.append((proc, int(match.group(1))))
                    break
                if not proc.alive() or time.time() > deadline:
                    raise RuntimeError(f"{proc.name} did not start:\n{proc.tail()}")
                time.sleep(0.1)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return started


# ---- gateways ----------------------------------------------------------------------------------------


def ensure_smg_venv(version: str = SMG_VERSION) -> Path:
    """The Rust SMG's own virtualenv (created and ``pip install smg==VERSION`` on first use)."""
    smg = SMG_VENV / "bin" / "smg"
    if not smg.exists():
        print(f"creating {SMG_VENV} and installing smg=={version} (first use) ...", flush=True)
        subprocess.run(["python3", "-m", "venv", str(SMG_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(SMG_VENV / "bin" / "pip"), "install", "-q", f"smg=={version}"], check=True, timeout=1200
        )
    return smg


def package_version(python: Path, package: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip() or "unknown"


def gateway_flags(
    worker_ports: list[int], model_dir: Path, port: int, policy: str = "round_robin"
) -> list[str]:
    """The launch flags both gateways accept unchanged (each serves /metrics on its own free port, as
    both would bind 0.0.0.0:29000 by default)."""
    return [
        "--worker-urls", *(f"grpc://127.0.0.1:{p}" for p in worker_ports),
        "--model-path", str(model_dir), "--policy", policy,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warn",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
    ]  # fmt: skip


GATEWAY_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def start_gateway(name: str, base_cmd: list[str], extra: list[str], flags: list[str], log: Path) -> Proc:
    return Proc(name, [*base_cmd, *flags, *extra], log, env=GATEWAY_ENV)


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    """(status, parsed body or raw text) of a GET, or of a POST when ``body`` is given."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_ready(proc: Proc, base_url: str, timeout: float = 120.0) -> float:
    """Seconds until ``/readiness`` answers 200; raises if the process dies or it takes too long."""
    start = time.time()
    while time.time() - start < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            if http_json(base_url + "/readiness", timeout=2)[0] == 200:
                return time.time() - start
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name}: /readiness not 200 after {timeout:.0f}s:\n{proc.tail()}")


def loadgen_cmd() -> list[str]:
    return [str(VENV_PY), str(Path(__file__).with_name("loadgen.py"))]


if sys.platform != "linux":  # /proc is needed for the CPU and memory figures
    raise SystemExit("bench/compare.py needs Linux")
