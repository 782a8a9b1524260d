"""``--tool-call-parser`` and ``--reasoning-parser``: SMG's router flags, validated against the parser
registry, router-only under ``smg serve``."""

from __future__ import annotations

import pytest

from adapters import cli
from dataplane.config import GatewayConfig, WorkerUrl
from dataplane.errors import ConfigError

WORKER = ["--worker-urls", "grpc://localhost:50051"]


def test_launch_takes_both_parsers() -> None:
    config = cli.parse_launch([*WORKER, "--tool-call-parser", "qwen", "--reasoning-parser", "deepseek_r1"])
    assert (config.tool_call_parser, config.reasoning_parser) == ("qwen", "deepseek_r1")
    default = cli.parse_launch(WORKER)
    assert (default.tool_call_parser, default.reasoning_parser) == (None, None)  # by model name


@pytest.mark.parametrize("flag", ["--tool-call-parser", "--reasoning-parser"])
def test_unknown_parser_names_are_usage_errors(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["launch", *WORKER, flag, "no_such_parser"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "passthrough" in err  # the known names are listed


@pytest.mark.parametrize("prefix", ["", "router-"])
def test_serve_parsers_go_to_the_router_only(prefix: str) -> None:
    plan = cli.parse_serve(
        ["--model", "/m", f"--{prefix}tool-call-parser", "json", f"--{prefix}reasoning-parser", "qwen3"]
    )
    assert (plan.gateway.tool_call_parser, plan.gateway.reasoning_parser) == ("json", "qwen3")
    assert list(plan.engine.extra_args) == []


def test_config_refuses_unknown_parsers() -> None:
    url = (WorkerUrl.parse("grpc://w:1"),)
    with pytest.raises(ConfigError, match=r"unknown tool_call_parser 'nope'; known: .*qwen"):
        GatewayConfig(worker_urls=url, tool_call_parser="nope")
    with pytest.raises(ConfigError, match="unknown reasoning_parser"):
        GatewayConfig(worker_urls=url, reasoning_parser="nope")
