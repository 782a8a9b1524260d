"""The Responses API over the database history backends, with real PostgreSQL and Redis servers.

A conversation outlives the gateway process (``smg launch`` restarted between two turns), and an outage
of the database fails only what needs it: stateful requests get a clear 503, stateless ones and chat
completions go on, and everything works again once the database is back. The workers echo their prompt,
so a turn's output shows what history reached the worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from dataplane.config import HistoryConfig
from tests.e2e.conftest import MODEL, Deployment, deployment
from tests.fakes.refworker_proc import PROJECT_ROOT, RefWorkerProcs
from tests.history.conftest import DATABASE_BACKENDS, uid
from tests.services import Server

STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def backend_flags(backend: str, server: Server) -> list[str]:
    if backend == "postgres":
        return ["--history-backend", "postgres", "--postgres-db-url", server.url]
    return ["--history-backend", "redis", "--redis-url", server.url]


@contextlib.contextmanager
def smg_launch(
    worker: tuple[str, int], model_dir: Path, flags: list[str], log: Path
) -> Iterator[openai.OpenAI]:
    """``smg launch`` as its own process until the block ends; an openai client for it."""
    port = free_port()
    host, worker_port = worker
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "adapters.cli", "launch", "--worker-urls", f"grpc://{host}:{worker_port}",
        "--model-path", str(model_dir), "--host", "127.0.0.1", "--port", str(port), *flags,
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=20)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert proc.poll() is None, f"smg exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"smg not ready:\n{log.read_text()}"
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/readiness", timeout=2) as reply:
                if reply.status == 200:
                    break
            time.sleep(0.05)
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def echo_worker() -> Iterator[tuple[str, int]]:
    with RefWorkerProcs(1, "--script", "echo") as (address,):
        yield address


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
def test_a_conversation_outlives_the_gateway_process(
    backend: str,
    request: pytest.FixtureRequest,
    echo_worker: tuple[str, int],
    model_dir: Path,
    tmp_path: Path,
) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    flags = backend_flags(backend, server)
    marker = uid("secret")
    log = tmp_path / "smg.log"
    with smg_launch(echo_worker, model_dir, flags, log) as client:
        first = client.responses.create(model=MODEL, input=f"The secret word is {marker}.")
        assert first.status == "completed" and marker in first.output_text
    with smg_launch(echo_worker, model_dir, flags, log) as client:  # a new process: nothing in memory
        second = client.responses.create(
            model=MODEL, input="What was the word?", previous_response_id=first.id
        )
        # The worker echoes the prompt it received: the first turn was rebuilt from the database.
        assert marker in second.output_text
        alone = client.responses.create(model=MODEL, input="What was the word?")
        assert marker not in alone.output_text
        assert client.responses.retrieve(first.id).output_text == first.output_text
        third = client.responses.create(model=MODEL, input="Again?", previous_response_id=second.id)
        assert marker in third.output_text


def assert_history_unavailable(call: object) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.status_code == 503
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "history_unavailable", body


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
def test_an_outage_fails_only_what_needs_the_database(
    backend: str, request: pytest.FixtureRequest, model_dir: Path
) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    history = (
        HistoryConfig(backend="postgres", postgres_db_url=server.url)
        if backend == "postgres"
        else HistoryConfig(backend="redis", redis_url=server.url)
    )
    d: Deployment
    with deployment(1, model_dir, "--script", "echo", history=history) as d:
        client = openai.OpenAI(base_url=f"{d.url}/v1", api_key="none", max_retries=0, timeout=20)
        before = client.responses.create(model=MODEL, input="before the outage")
        with server.down():
            started = time.monotonic()
            assert_history_unavailable(lambda: client.responses.create(model=MODEL, input="stored?"))
            assert_history_unavailable(
                lambda: client.responses.create(model=MODEL, input="go on", previous_response_id=before.id)
            )
            assert_history_unavailable(lambda: client.responses.retrieve(before.id))
            assert time.monotonic() - started < 10  # reported, not waited out
            stateless = client.responses.create(model=MODEL, input="not stored", store=False)
            assert stateless.status == "completed" and "not stored" in stateless.output_text
            chat = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi there"}]
            )
            assert chat.choices[0].message.content and "hi there" in chat.choices[0].message.content
        after = client.responses.create(model=MODEL, input="after the outage")
        assert client.responses.retrieve(after.id).id == after.id
        if backend == "postgres":  # Redis keeps nothing across a restart here (no persistence configured)
            follow = client.responses.create(model=MODEL, input="and now", previous_response_id=before.id)
            assert "before the outage" in follow.output_text
