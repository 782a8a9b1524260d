"""Real PostgreSQL and Redis servers for the tests (a pytest plugin, loaded by tests/conftest.py).

``postgres_server`` and ``redis_server`` each start one throw-away server on loopback with
``scripts/services`` the first time a test asks for it, and stop it when the session ends. Where the
servers are not installed (``scripts/services install``), those tests are skipped — or fail, when
``SMG_TEST_REQUIRE_SERVICES=1`` (set by scripts/test, so CI cannot pass without them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "services"
ServiceName = Literal["postgres", "redis"]


@dataclass(frozen=True)
class Server:
    """One running server; ``down()`` stops it for the length of a ``with`` block, then starts it again."""

    name: ServiceName
    directory: Path
    url: str

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    def url_for(self, database: str) -> str:
        """The URL of another database (Postgres) or logical database number (Redis) on this server."""
        return urlunsplit(urlsplit(self.url)._replace(path=f"/{database}"))

    def stop(self) -> None:
        _services("stop", str(self.directory), self.name)

    def start(self) -> None:
        _services("start", str(self.directory), self.name)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server's processes stopped (SIGSTOP) for the block: it accepts nothing and answers nothing."""
        pid_file = {"postgres": "postgres/postmaster.pid", "redis": "redis/redis.pid"}[self.name]
        pids = _process_tree(int((self.directory / pid_file).read_text().split()[0]))
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            stat = (entry / "stat").read_text()
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def _services(*args: str) -> str:
    result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/services {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _server(name: ServiceName) -> Iterator[Server]:
    if subprocess.run([str(SCRIPT), "check"], capture_output=True).returncode != 0:
        message = f"{name} is not installed here (scripts/services install)"
        if os.environ.get("SMG_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's tmp_path: as root, Postgres runs as the `postgres` user, which must reach it.
    directory = Path(tempfile.mkdtemp(prefix=f"smg-{name}-"))
    directory.chmod(0o755)
    try:
        out = _services("start", str(directory), name)
        key = f"{name.upper()}_URL="
        url = next(line.removeprefix(key) for line in out.splitlines() if line.startswith(key))
        yield Server(name, directory, url)
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _services("stop", str(directory), name)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    yield from _server("postgres")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    yield from _server("redis")
