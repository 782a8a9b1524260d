"""Log lines (text and JSON), the request id on them across tasks, the log file, the observability flags."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from adapters import cli
from adapters.logs import REQUEST_ID, JsonFormatter, RequestIdFilter, TextFormatter, configured
from adapters.metrics import listener_host, start_listener
from dataplane.errors import ConfigError
from tests.dataplane.gateways import chat, hello, started_gateway

WORKER = ["--worker-urls", "grpc://127.0.0.1:50051"]


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose records go through a JSON handler (with the request-id filter) into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_level_logger_message_extras_and_exceptions(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    logger.warning("worker %s failed", "w1", extra={"worker": "grpc://w1:1", "attempt": 2})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("unhandled")
    warning, error = lines(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", warning["timestamp"])
    assert (warning["level"], warning["logger"], warning["message"]) == (
        "WARN",
        "test.logs",
        "worker w1 failed",
    )
    assert (warning["worker"], warning["attempt"]) == ("grpc://w1:1", 2)
    assert "request_id" not in warning  # logged outside any request
    assert error["level"] == "ERROR" and "ValueError: boom" in error["exception"]


async def test_the_request_id_follows_the_request_into_the_tasks_it_spawns(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    gate = asyncio.Event()

    async def spawned() -> None:
        await gate.wait()
        logger.info("from a task of the request")

    async def request(request_id: str) -> asyncio.Task[None]:
        REQUEST_ID.set(request_id)
        logger.info("in the handler")
        return asyncio.create_task(spawned())

    # Each handler runs in a task of its own (as aiohttp runs them); the spawned tasks run after both set.
    tasks = [await asyncio.create_task(request(rid)) for rid in ("req-1", "req-2")]
    logger.info("outside")
    gate.set()
    await asyncio.gather(*tasks)
    got = [(line["message"], line.get("request_id")) for line in lines(out)]
    assert got[:3] == [("in the handler", "req-1"), ("in the handler", "req-2"), ("outside", None)]
    assert sorted(got[3:]) == [
        ("from a task of the request", "req-1"),
        ("from a task of the request", "req-2"),
    ]


def test_text_lines_name_the_request_only_while_there_is_one() -> None:
    formatter = TextFormatter()
    record = logging.makeLogRecord({"name": "smg", "levelname": "INFO", "msg": "hello", "request_id": None})
    assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ INFO smg: hello", formatter.format(record))
    record.request_id = "req-9"
    assert formatter.format(record).endswith(" INFO smg [req-9]: hello")


@pytest.mark.parametrize(("level", "number"), [("debug", 10), ("info", 20), ("warn", 30), ("error", 40)])
def test_levels(level: str, number: int) -> None:
    with configured(level):
        assert logging.getLogger().level == number


def test_the_log_dir_is_created_and_holds_the_same_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir = tmp_path / "new" / "logs"
    with configured("warn", json=True, log_dir=str(log_dir)):
        logging.getLogger("test.file").info("not at warn")
        logging.getLogger("test.file").warning("kept")
    written = (log_dir / "smg.log").read_text().splitlines()
    assert [json.loads(line)["message"] for line in written] == ["kept"]
    assert capsys.readouterr().err.splitlines() == written


def test_an_unwritable_log_dir_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="--log-dir"), configured("info", log_dir=str(tmp_path / "file")):
        pass


# ---- flags ---------------------------------------------------------------------------------------------


def test_observability_defaults_match_smg() -> None:
    config = cli.parse_launch(WORKER)
    assert (config.prometheus_host, config.prometheus_port) == (None, 29000)
    assert len(config.prometheus_duration_buckets) == 29
    assert config.prometheus_duration_buckets[0] == 0.001 and config.prometheus_duration_buckets[-1] == 7200
    assert (config.log_json, config.log_dir, config.log_prompts) == (False, None, False)
    assert listener_host(None, "0.0.0.0") == "0.0.0.0"
    assert listener_host(None, "::1") == "::"
    assert listener_host("127.0.0.1", "::1") == "127.0.0.1"


def test_observability_flags() -> None:
    config = cli.parse_launch(
        [*WORKER, "--prometheus-host", "127.0.0.1", "--prometheus-port", "9100",
         "--prometheus-duration-buckets", "0.1", "1", "10", "--log-json", "--log-dir", "/var/log/smg",
         "--log-prompts"]
    )  # fmt: skip
    assert (config.prometheus_host, config.prometheus_port) == ("127.0.0.1", 9100)
    assert config.prometheus_duration_buckets == (0.1, 1.0, 10.0)
    assert (config.log_json, config.log_dir, config.log_prompts) == (True, "/var/log/smg", True)
    serve = cli.parse_serve(["--backend", "reference", "--router-prometheus-port", "9200", "--log-json"])
    assert (serve.gateway.prometheus_port, serve.gateway.log_json) == (9200, True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prometheus-duration-buckets", "1", "0.5"], "strictly increasing"),
        (["--prometheus-duration-buckets", "0", "1"], "strictly increasing"),
        (["--prometheus-port", "70000"], "prometheus_port 70000 out of range"),
    ],
)
def test_bad_observability_values(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["launch", *WORKER, *argv]) == 2
    assert message in capsys.readouterr().err


# ---- the listener and --log-prompts --------------------------------------------------------------------


async def test_the_listener_serves_the_registry_on_a_port_of_its_own() -> None:
    registry = CollectorRegistry()
    Counter("smg_test_things", "things", registry=registry).inc(3)
    runner = await start_listener(registry, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as reply:
            assert reply.status == 200
            assert "smg_test_things_total 3.0" in await reply.text()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_prompt_and_completion_texts_are_logged_only_when_asked(
    model_dir: Path, log_prompts: bool, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await started_gateway(model_dir, [hello], log_prompts=log_prompts)
    try:
        with caplog.at_level(logging.DEBUG):
            done = await gw.collect(chat("the secret prompt"))
    finally:
        await gw.stop()
    assert done.choices[0].text == "Hello"
    logged = caplog.text
    assert ("the secret prompt" in logged) is log_prompts
    assert ("'Hello'" in logged) is log_prompts
