"""The real command line: ``smg serve --backend reference --data-parallel-size 2`` as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from refworker.scripts import FIXED_TEXT
from tests.e2e.conftest import MODEL

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 40.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; the workers run in sessions of their own)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def readiness(port: int) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readiness", timeout=2) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 0, str(exc)


@pytest.fixture
def smg_serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    base = free_port()
    log = tmp_path / "smg.log"
    env = dict(os.environ, SMG_CACHE_DIR=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "adapters.cli", "serve", "--backend", "reference", "--data-parallel-size", "2",
        "--port", str(port), "--worker-base-port", str(base), "--prometheus-host", "127.0.0.1",
        "--prometheus-port", "0",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=env)
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None:
            for pid in children(proc.pid):
                os.killpg(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()


def test_smg_serve_reference_backend(smg_serve: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    proc, port, log = smg_serve
    deadline = time.monotonic() + STARTUP_TIMEOUT
    status, body = readiness(port)
    while not (status == 200 and body["healthy_workers"] == 2):
        assert proc.poll() is None, f"smg exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"not ready: {status} {body}\n{log.read_text()}"
        time.sleep(0.1)
        status, body = readiness(port)
    workers = children(proc.pid)
    assert len(workers) == 2
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/workers", timeout=5) as reply:
        worker_ports = [int(w["url"].rsplit(":", 1)[1]) for w in json.loads(reply.read())["workers"]]
    assert len(worker_ports) == 2

    with openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=20
    ) as client:
        assert [m.id for m in client.models.list()] == [MODEL]
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == FIXED_TEXT
        chunks = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FIXED_TEXT

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    assert not [pid for pid in workers if alive(pid)]
    for listening in (port, *worker_ports):  # nothing listens any more
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", listening), timeout=2).close()
