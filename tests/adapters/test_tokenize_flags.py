"""SMG's tokenizer cache flags and our --grpc-port, from the command line to the loaded tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import cli
from tests.dataplane.gateways import MODEL, hello, started_gateway

WORKER = ["--worker-urls", "grpc://127.0.0.1:1"]


def test_caches_are_on_by_default_and_grpc_off() -> None:
    config = cli.parse_launch(WORKER)
    assert (config.tokenizer_cache_enable_l0, config.tokenizer_cache_enable_l1) == (True, True)
    assert (config.tokenizer_cache_l0_max_entries, config.tokenizer_cache_l1_max_memory) == (10_000, 50 << 20)
    assert config.tokenizer_cache_l0_max_memory == 256 << 20 and config.grpc_port is None


def test_launch_takes_smgs_cache_flags_and_the_grpc_port() -> None:
    config = cli.parse_launch(
        [
            *WORKER,
            "--no-tokenizer-cache-enable-l0",
            "--tokenizer-cache-l0-max-entries", "5",
            "--tokenizer-cache-l0-max-memory", "1000",
            "--tokenizer-cache-enable-l1",
            "--tokenizer-cache-l1-max-memory", "2000",
            "--grpc-port", "50051",
        ]
    )  # fmt: skip
    assert not config.tokenizer_cache_enable_l0 and config.tokenizer_cache_enable_l1
    assert (config.tokenizer_cache_l0_max_entries, config.tokenizer_cache_l0_max_memory) == (5, 1000)
    assert (config.tokenizer_cache_l1_max_memory, config.grpc_port) == (2000, 50051)


def test_serve_takes_them_prefixed() -> None:
    flags = ["--router-tokenizer-cache-l1-max-memory", "7", "--no-router-tokenizer-cache-enable-l0"]
    plan = cli.parse_serve(["--model", "/m", *flags])
    assert plan.gateway.tokenizer_cache_l1_max_memory == 7 and not plan.gateway.tokenizer_cache_enable_l0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tokenizer-cache-l1-max-memory", "0"], "tokenizer_cache_l1_max_memory must be at least 1"),
        (["--tokenizer-cache-l0-max-entries", "-1"], "tokenizer_cache_l0_max_entries must be at least 1"),
        (["--grpc-port", "70000"], "grpc_port 70000 out of range"),
    ],
)
def test_bad_values_fail_at_start(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["launch", *WORKER, *argv]) == 2
    assert message in capsys.readouterr().err


async def test_the_gateway_builds_tokenizers_with_the_configured_caches(model_dir: Path) -> None:
    gateway = await started_gateway(
        model_dir, [hello], tokenizer_cache_enable_l0=False, tokenizer_cache_l1_max_memory=123_456
    )
    try:
        encoder = gateway.tokenizer(MODEL).encoder
        assert encoder.l0 is None and [s.max_memory_bytes for s in encoder.stats()] == [123_456]
        assert gateway.tokenizers() == [gateway.tokenizer(MODEL)]
    finally:
        await gateway.stop()
