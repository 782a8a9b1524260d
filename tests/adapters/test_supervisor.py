"""``smg serve``: engine commands, and the supervisor run against stand-in engines on loopback.

The stand-ins (``tests/fakes/engines``) go first on the children's PYTHONPATH, so the real engine
commands (``python -m sglang.launch_server …``) run them; each records its argv and environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters import app, cli, supervisor
from adapters.engines import EngineSpec, engine_command, engine_env, flag_value, tp_size, worker_url
from dataplane.config import GatewayConfig
from dataplane.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
ENGINES = REPO / "tests" / "fakes" / "engines"
PY = sys.executable
WHERE = ["--host", "h", "--port", "5"]
GRACE = 0.5  # the supervisor's SIGTERM→SIGKILL grace in these tests

# ---- engine commands (pure) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "mode", "expected"),
    [
        ("sglang", "grpc", [PY, "-m", "sglang.launch_server", "--model-path", "M", *WHERE, "--grpc-mode"]),
        ("sglang", "http", [PY, "-m", "sglang.launch_server", "--model-path", "M", *WHERE]),
        ("vllm", "grpc", [PY, "-m", "vllm.entrypoints.grpc_server", "--model", "M", *WHERE]),
        ("vllm", "http", [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", "M", *WHERE]),
        ("trtllm", "grpc", [PY, "-m", "tensorrt_llm.commands.serve", "M", "--grpc", *WHERE]),
        ("reference", "grpc", [PY, "-m", "refworker", "--model-path", "M", "--served-model-name", "N",
                               *WHERE]),
        ("reference", "http", [PY, "-m", "refworker", "--model-path", "M", "--served-model-name", "N",
                               *WHERE, "--mode", "http"]),
    ],
)  # fmt: skip
def test_engine_command(backend: Any, mode: Any, expected: list[str]) -> None:
    assert engine_command(EngineSpec(backend, mode, "M", "N"), "h", 5) == expected


@pytest.mark.parametrize(
    ("backend", "extra", "tail"),
    [
        ("sglang", ("--tp-size", "2", "--mem-fraction-static=0.8"),
         ["--tp-size", "2", "--mem-fraction-static=0.8"]),
        # TRT-LLM's options are spelled with underscores; the values are left alone.
        ("trtllm", ("--tp-size", "2", "--kv-cache=a-b", "x-y"), ["--tp_size", "2", "--kv_cache=a-b", "x-y"]),
        ("reference", ("--ttft-ms", "5"), ["--ttft-ms", "5"]),
    ],
)  # fmt: skip
def test_engine_command_appends_pass_through_args(
    backend: Any, extra: tuple[str, ...], tail: list[str]
) -> None:
    cmd = engine_command(EngineSpec(backend, "grpc", "M", None, extra), "h", 5)
    assert cmd[-len(tail) :] == tail


def test_reference_served_name_defaults_to_model_and_yields_to_pass_through() -> None:
    assert "--served-model-name" not in engine_command(EngineSpec("sglang", "grpc", "M"), "h", 5)
    cmd = engine_command(EngineSpec("reference", "grpc", "M"), "h", 5)
    assert cmd[cmd.index("--served-model-name") + 1] == "M"
    cmd = engine_command(EngineSpec("reference", "grpc", "M", "N", ("--served-model-name", "X")), "h", 5)
    assert cmd.count("--served-model-name") == 1 and cmd[-1] == "X"


@pytest.mark.parametrize(
    ("backend", "mode", "flag"),
    [("sglang", "http", "--enable-cache-report"), ("vllm", "http", "--enable-prompt-tokens-details"),
     ("sglang", "grpc", None), ("vllm", "grpc", None), ("trtllm", "grpc", None), ("reference", "http", None)],
)  # fmt: skip
def test_token_usage_details_flag(backend: Any, mode: Any, flag: str | None) -> None:
    plain = engine_command(EngineSpec(backend, mode, "M"), "h", 5)
    detailed = engine_command(EngineSpec(backend, mode, "M", token_usage_details=True), "h", 5)
    assert detailed == ([*plain, flag] if flag else plain)


@pytest.mark.parametrize(
    ("extra", "base", "devices"),
    [
        ((), {}, ["0", "1", "2"]),
        (("--tp-size", "2"), {}, ["0,1", "2,3", "4,5"]),
        (("--tensor-parallel-size=2",), {}, ["0,1", "2,3", "4,5"]),
        (("--tp_size", "3"), {}, ["0,1,2", "3,4,5", "6,7,8"]),
        (("-tp", "1"), {"CUDA_VISIBLE_DEVICES": "4, 6,7"}, ["4", "6", "7"]),
    ],
)
def test_cuda_visible_devices_per_rank(
    extra: tuple[str, ...], base: dict[str, str], devices: list[str]
) -> None:
    spec = EngineSpec("vllm", "grpc", "M", extra_args=extra)
    envs = [engine_env(spec, rank, base | {"KEEP": "1"}) for rank in range(3)]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == devices
    assert all(env["KEEP"] == "1" and env["PYTHONUNBUFFERED"] == "1" for env in envs)


def test_reference_workers_get_no_gpus() -> None:
    env = engine_env(EngineSpec("reference", "grpc", "M", extra_args=("--tp-size", "2")), 1, {"A": "b"})
    assert env == {"A": "b", "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize(
    ("args", "names", "value"),
    [
        (["--a", "1", "--b", "2"], ["--b"], "2"),
        (["--a=1", "--a", "3"], ["--a"], "3"),
        (["--ab", "1"], ["--a"], None),
        (["--a"], ["--a"], None),
    ],
)
def test_flag_value(args: list[str], names: list[str], value: str | None) -> None:
    assert flag_value(args, names) == value


@pytest.mark.parametrize("args", [["--tp-size", "0"], ["-tp", "x"]])
def test_bad_tp_size(args: list[str]) -> None:
    with pytest.raises(ConfigError, match="tensor-parallel size"):
        tp_size(args)


@pytest.mark.parametrize(
    ("mode", "host", "url"),
    [("grpc", "10.0.0.1", "grpc://10.0.0.1:7"), ("http", "0.0.0.0", "http://127.0.0.1:7"),
     ("grpc", "::", "grpc://[::1]:7"), ("grpc", "fe80::1", "grpc://[fe80::1]:7")],
)  # fmt: skip
def test_worker_url(mode: Any, host: str, url: str) -> None:
    assert worker_url(mode, host, 7) == url


def test_free_ports_skips_ports_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        ports = supervisor.free_ports("127.0.0.1", taken, 2, skip={taken + 1})
    assert ports[0] > taken + 1 and ports == sorted(set(ports))


# ---- running stand-in engines -----------------------------------------------------------------------


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Children run the stand-in engines and record themselves in the returned directory."""
    folder = tmp_path / "records"
    folder.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ENGINES), str(REPO)]))
    monkeypatch.setenv("FAKE_ENGINE_RECORD_DIR", str(folder))
    monkeypatch.setenv("SMG_CACHE_DIR", str(tmp_path / "cache"))
    for name in (
        "CUDA_VISIBLE_DEVICES",
        "FAKE_ENGINE_BEHAVIOR",
        "FAKE_ENGINE_GRANDCHILD",
        "SMG_DEFAULT_BACKEND",
    ):
        monkeypatch.delenv(name, raising=False)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_args(*extra: str, gateway_port: int | None = None) -> list[str]:
    return [
        "--host", "127.0.0.1", "--port", str(gateway_port or free_port()),
        "--worker-base-port", str(free_port()), "--router-health-check-interval-secs", "1",
        "--router-prometheus-host", "127.0.0.1", "--router-prometheus-port", "0", *extra,
    ]  # fmt: skip


def read_records(folder: Path) -> list[dict[str, Any]]:
    """The stand-ins' records, in rank order (ranks take increasing ports)."""
    found = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    return sorted(found, key=lambda record: int(flag_value(record["argv"], ["--port"]) or 0))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # An orphan nobody has reaped yet is dead all the same.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] == "Z"


async def wait_for(condition: Callable[[], object], what: str, limit: float = 15.0) -> None:
    """Poll ``condition()`` (its result awaited if need be) until true: a wait for a process to come up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def http_status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as reply:
            return reply.status
    except aiohttp.ClientError:
        return 0


async def http_ok(url: str) -> bool:
    return await http_status(url) == 200


class Recorder:
    """A gateway stand-in: records the config it is given, returns at once."""

    def __init__(self) -> None:
        self.configs: list[GatewayConfig] = []

    async def __call__(self, config: GatewayConfig, stop: asyncio.Event) -> None:
        self.configs.append(config)


@pytest.mark.parametrize(
    ("backend", "mode", "module"),
    [
        ("sglang", "grpc", "sglang.launch_server"),
        ("sglang", "http", "sglang.launch_server"),
        ("vllm", "grpc", "vllm.entrypoints.grpc_server"),
        ("vllm", "http", "vllm.entrypoints.openai.api_server"),
        ("trtllm", "grpc", "tensorrt_llm.commands.serve"),
    ],
)
async def test_serve_waits_for_each_backend(backend: str, mode: str, module: str, records: Path) -> None:
    plan = cli.parse_serve(
        serve_args("--backend", backend, "--connection-mode", mode, "--model", "/models/m")
    )
    gateway = Recorder()
    await supervisor.run_serve(plan, asyncio.Event(), gateway=gateway, shutdown_grace=GRACE)
    [record] = read_records(records)
    assert record["module"] == module
    [config] = gateway.configs
    assert [url.url for url in config.worker_urls] == [
        f"{mode}://127.0.0.1:{flag_value(record['argv'], ['--port'])}"
    ]
    assert config.model_path == "/models/m"
    assert gone(record["pid"])


async def test_serve_sglang_dp2_end_to_end_and_sigterm(records: Path, tmp_path: Path) -> None:
    gateway_port = free_port()
    argv = serve_args(
        "--backend", "sglang", "--data-parallel-size", "2", "--model-path", "/models/llama",
        "--tp-size", "2", "--mem-fraction-static", "0.8", gateway_port=gateway_port,
    )  # fmt: skip
    log = tmp_path / "smg.log"
    env = os.environ | {"FAKE_ENGINE_GRANDCHILD": "1"}  # each engine leaves a SIGTERM-proof subprocess
    with log.open("wb") as sink:
        smg = await asyncio.create_subprocess_exec(
            PY, "-m", "adapters.cli", "serve", *argv, cwd=REPO, env=env, stderr=sink
        )
    try:
        await wait_for(lambda: http_ok(f"http://127.0.0.1:{gateway_port}/health"), "the gateway", 20.0)
        started = read_records(records)
        smg.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(smg.wait(), 20) == 0, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            smg.kill()
    assert len(started) == 2
    for rank, record in enumerate(started):
        port = flag_value(record["argv"], ["--port"])
        assert record["module"] == "sglang.launch_server"
        assert record["argv"] == [
            "--model-path", "/models/llama", "--host", "127.0.0.1", "--port", port, "--grpc-mode",
            "--tp-size", "2", "--mem-fraction-static", "0.8",
        ]  # fmt: skip
        assert record["cuda_visible_devices"] == ("0,1", "2,3")[rank]
        assert record["pgid"] == record["pid"]  # its own process group
        assert gone(record["pid"]) and gone(record["grandchild"]), log.read_text()
    assert " INFO adapters.supervisor: all 2 worker(s) ready" in log.read_text()


async def test_worker_exiting_at_startup_is_named(records: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ENGINE_BEHAVIOR", "exit:3")
    plan = cli.parse_serve(serve_args("--model", "/m", "--data-parallel-size", "2"))
    with pytest.raises(supervisor.WorkerStartupError) as failure:
        await supervisor.run_serve(plan, asyncio.Event(), gateway=Recorder(), shutdown_grace=GRACE)
    message = str(failure.value)
    assert "sglang worker" in message and "exited with exit code 3 during startup" in message
    assert "fake sglang.launch_server: CUDA out of memory (simulated)" in message
    assert all(gone(record["pid"]) for record in read_records(records))


def test_smg_exits_non_zero_when_a_worker_dies_at_startup(
    records: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_ENGINE_BEHAVIOR", "exit:7")
    assert cli.main(["serve", *serve_args("--backend", "vllm", "--model", "/m")]) == 1
    err = capsys.readouterr().err
    assert "smg: vllm worker 0 (pid" in err and "exited with exit code 7 during startup" in err


async def test_worker_never_ready_times_out_and_is_killed(
    records: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_ENGINE_BEHAVIOR", "hang")  # ignores SIGTERM too
    plan = cli.parse_serve(serve_args("--model", "/m", "--worker-startup-timeout", "1.5"))
    with pytest.raises(supervisor.WorkerStartupError, match=r"sglang worker 0 .* not ready within 1.5 s"):
        await supervisor.run_serve(plan, asyncio.Event(), gateway=Recorder(), shutdown_grace=GRACE)
    [record] = read_records(records)
    assert gone(record["pid"])


async def test_stop_during_startup_stops_the_workers(records: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ENGINE_BEHAVIOR", "hang")
    plan = cli.parse_serve(serve_args("--model", "/m"))
    stop = asyncio.Event()
    gateway = Recorder()
    serving = asyncio.create_task(supervisor.run_serve(plan, stop, gateway=gateway, shutdown_grace=GRACE))
    await wait_for(lambda: read_records(records), "the worker to start")
    stop.set()
    await serving
    assert gateway.configs == []
    assert all(gone(record["pid"]) for record in read_records(records))


async def test_gateway_port_in_use_cleans_up_the_workers(records: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        plan = cli.parse_serve(
            serve_args("--model", "/m", "--dp-size", "2", gateway_port=squatter.getsockname()[1])
        )
        with pytest.raises(OSError, match="address already in use"):
            await supervisor.run_serve(plan, asyncio.Event(), gateway=app.serve, shutdown_grace=GRACE)
    started = read_records(records)
    assert len(started) == 2 and all(gone(record["pid"]) for record in started)


class _Gate(logging.Handler):
    """Opens when a record from ``logger`` at ``level`` arrives."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.opened = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.opened.set()


@pytest.fixture
def errors_logged() -> Iterator[_Gate]:
    gate = _Gate(logging.ERROR)
    logging.getLogger(supervisor.__name__).addHandler(gate)
    yield gate
    logging.getLogger(supervisor.__name__).removeHandler(gate)


async def test_worker_dying_after_startup_is_logged_and_serving_goes_on(
    records: Path, errors_logged: _Gate
) -> None:
    gateway_port = free_port()
    plan = cli.parse_serve(serve_args("--model", "/m", "--dp-size", "2", gateway_port=gateway_port))
    stop = asyncio.Event()
    serving = asyncio.create_task(supervisor.run_serve(plan, stop, shutdown_grace=GRACE))
    health = f"http://127.0.0.1:{gateway_port}/health"
    await wait_for(lambda: http_ok(health), "the gateway")
    victim, survivor = read_records(records)
    os.kill(victim["pid"], signal.SIGKILL)
    await asyncio.wait_for(errors_logged.opened.wait(), 10)
    assert "exited with signal SIGKILL after startup" in errors_logged.messages[0]
    assert not serving.done() and await http_ok(health)
    assert not gone(survivor["pid"])
    stop.set()
    await serving
    assert gone(survivor["pid"])


async def test_serve_reference_backend_end_to_end(records: Path, tmp_path: Path) -> None:
    gateway_port = free_port()
    argv = serve_args("--backend", "reference", "--data-parallel-size", "2", gateway_port=gateway_port)
    log = tmp_path / "smg.log"
    with log.open("wb") as sink:
        smg = await asyncio.create_subprocess_exec(
            PY, "-m", "adapters.cli", "serve", *argv, cwd=REPO, stderr=sink
        )
    try:
        await wait_for(lambda: http_ok(f"http://127.0.0.1:{gateway_port}/health"), "the gateway", 20.0)
        # Readiness follows once the gateway's own health checks have seen the workers.
        await wait_for(lambda: http_ok(f"http://127.0.0.1:{gateway_port}/readiness"), "readiness", 10.0)
        smg.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(smg.wait(), 20) == 0, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            smg.kill()
    pids = [int(pid) for pid in re.findall(r"started reference worker \d \(pid (\d+)", log.read_text())]
    assert len(pids) == 2 and all(gone(pid) for pid in pids)
