"""``smg`` command-line parsing: defaults, subcommands, SMG's documented command lines, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from adapters import app, cli
from adapters.router_args import SMG_POLICIES, UNSUPPORTED_FLAGS, available_policies
from dataplane.config import GatewayConfig, PolicyConfig
from dataplane.embedded import EMBEDDED_MODEL_NAME

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SMG_DEFAULT_BACKEND", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SMG_CACHE_DIR", str(tmp_path / "cache"))


def _fail(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``smg ARGV``, expect exit code 2, return stderr."""
    assert cli.main(argv) == 2
    return capsys.readouterr().err


# ---- smg launch -------------------------------------------------------------------------------------


def test_launch_defaults_match_smg() -> None:
    config = cli.parse_launch(["--worker-urls", "grpc://localhost:50051"])
    assert (config.host, config.port) == ("0.0.0.0", 30000)
    assert config.policy == "cache_aware"
    assert config.request_timeout_secs == 1800
    assert config.max_payload_size == 536870912
    assert (config.health_check_interval_secs, config.health_check_timeout_secs) == (60, 5)
    assert (config.health_failure_threshold, config.health_success_threshold) == (3, 2)
    assert not config.disable_health_check
    assert config.request_id_headers == ("x-request-id", "x-correlation-id", "x-trace-id", "request-id")
    assert config.log_level == "info"
    assert config.model_path is None


@pytest.mark.parametrize(
    ("argv", "urls", "model"),
    [
        # SMG Getting Started: gRPC workers.
        (["--worker-urls", "grpc://localhost:50051", "--model-path", LLAMA, "--policy", "round_robin",
          "--host", "0.0.0.0", "--port", "30000"], ["grpc://localhost:50051"], LLAMA),
        # SMG Getting Started: HTTP workers.
        (["--worker-urls", "http://localhost:8000", "--policy", "round_robin", "--host", "0.0.0.0",
          "--port", "30000"], ["http://localhost:8000"], None),
        (["--worker-urls", "grpc://a:1", "http://b:2", "--worker-urls", "grpc://c:3", "--model", "/m"],
         ["grpc://a:1", "http://b:2", "grpc://c:3"], "/m"),
    ],
)  # fmt: skip
def test_launch_getting_started(argv: list[str], urls: list[str], model: str | None) -> None:
    config = cli.parse_launch(argv)
    assert [url.url for url in config.worker_urls] == urls
    assert config.model_path == model
    assert (config.host, config.port) == ("0.0.0.0", 30000)
    assert config.policy == ("round_robin" if "--policy" in argv else "cache_aware")


def test_launch_every_supported_flag() -> None:
    config = cli.parse_launch(
        ["--worker-urls", "grpc://w:1", "--tokenizer-path", "/tok", "--chat-template", "/t.jinja",
         "--policy", "random", "--request-timeout-secs", "120", "--max-payload-size", "1024",
         "--health-check-interval-secs", "7", "--health-check-timeout-secs", "2",
         "--health-failure-threshold", "4", "--health-success-threshold", "5", "--disable-health-check",
         "--request-id-headers", "x-a", "x-b", "--log-level", "debug", "--health-check-endpoint", "/healthz"]
    )  # fmt: skip
    assert (config.tokenizer_path, config.chat_template, config.policy) == ("/tok", "/t.jinja", "random")
    assert (config.request_timeout_secs, config.max_payload_size) == (120, 1024)
    assert (config.health_check_interval_secs, config.health_check_timeout_secs) == (7, 2)
    assert (config.health_failure_threshold, config.health_success_threshold) == (4, 5)
    assert config.disable_health_check and config.health_check_endpoint == "/healthz"
    assert config.request_id_headers == ("x-a", "x-b")
    assert config.log_level == "debug"


WORKER = ["--worker-urls", "grpc://127.0.0.1:50051"]


def test_launch_reliability_defaults_match_smg() -> None:
    config = cli.parse_launch(WORKER)
    assert (config.retry_max_retries, config.retry_initial_backoff_ms, config.retry_max_backoff_ms) == (
        5,
        50,
        30000,
    )
    assert (config.retry_backoff_multiplier, config.retry_jitter_factor) == (1.5, 0.2)
    assert (config.cb_failure_threshold, config.cb_success_threshold) == (10, 3)
    assert (config.cb_timeout_duration_secs, config.cb_window_duration_secs) == (60, 120)
    assert not (config.disable_retries or config.disable_circuit_breaker or config.remove_unhealthy_workers)
    assert config.load_monitor_interval == 10
    assert config.routing == PolicyConfig()


def test_launch_reliability_and_routing_flags() -> None:
    config = cli.parse_launch(
        [*WORKER, "--retry-max-retries", "3", "--retry-initial-backoff-ms", "10", "--retry-max-backoff-ms",
         "100", "--retry-backoff-multiplier", "2", "--retry-jitter-factor", "0", "--disable-retries",
         "--cb-failure-threshold", "4", "--cb-success-threshold", "2", "--cb-timeout-duration-secs", "9",
         "--cb-window-duration-secs", "30", "--disable-circuit-breaker", "--remove-unhealthy-workers",
         "--load-monitor-interval", "0.5", "--cache-threshold", "0.5", "--balance-abs-threshold", "8",
         "--balance-rel-threshold", "2", "--balance-token-usage-threshold", "0.4",
         "--overload-token-usage-threshold", "0.9", "--eviction-interval", "30", "--max-tree-size", "1000",
         "--block-size", "32", "--prefix-token-count", "64", "--prefix-hash-load-factor", "1.5",
         "--least-load-kv-pressure-weight", "0.3", "--least-load-default-throughput", "500",
         "--least-load-mean-prefill-tokens", "256", "--max-idle-secs", "60", "--assignment-mode",
         "min_group", "--routing-key-override"]
    )  # fmt: skip
    assert (config.retry_max_retries, config.retry_initial_backoff_ms, config.retry_max_backoff_ms) == (
        3,
        10,
        100,
    )
    assert (config.retry_backoff_multiplier, config.retry_jitter_factor, config.disable_retries) == (
        2,
        0,
        True,
    )
    assert (config.cb_failure_threshold, config.cb_success_threshold) == (4, 2)
    assert (config.cb_timeout_duration_secs, config.cb_window_duration_secs) == (9, 30)
    assert config.disable_circuit_breaker and config.remove_unhealthy_workers and config.routing_key_override
    assert config.load_monitor_interval == 0.5
    assert config.routing == PolicyConfig(
        cache_threshold=0.5, balance_abs_threshold=8, balance_rel_threshold=2,
        balance_token_usage_threshold=0.4, overload_token_usage_threshold=0.9, eviction_interval_secs=30,
        max_tree_size=1000, block_size=32, prefix_token_count=64, prefix_hash_load_factor=1.5,
        least_load_kv_pressure_weight=0.3, least_load_default_throughput=500,
        least_load_mean_prefill_tokens=256, max_idle_secs=60, assignment_mode="min_group",
    )  # fmt: skip
    assert cli.parse_launch([*WORKER, "--eviction-interval-secs", "7"]).routing.eviction_interval_secs == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--retry-max-retries", "0"], "retry_max_retries (total attempts) must be at least 1"),
        (["--retry-initial-backoff-ms", "100", "--retry-max-backoff-ms", "10"], "retry backoffs"),
        (["--retry-backoff-multiplier", "0.5"], "retry_backoff_multiplier must be at least 1"),
        (["--retry-jitter-factor", "2"], "retry_jitter_factor must be between 0 and 1"),
        (["--cb-failure-threshold", "0"], "circuit breaker thresholds must be at least 1"),
        (["--cb-timeout-duration-secs", "0"], "cb_timeout_duration_secs must be positive"),
        (["--load-monitor-interval", "0"], "load_monitor_interval must be positive"),
        (["--block-size", "0"], "block_size must be at least 1"),
        (["--eviction-interval", "0"], "eviction_interval_secs must be positive"),
        (["--assignment-mode", "nearest"], "invalid choice: 'nearest'"),
    ],
)
def test_invalid_reliability_and_routing_values(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in _fail(["launch", *WORKER, *argv], capsys)


@pytest.mark.parametrize("argv", [["launch", *WORKER], ["start", *WORKER], WORKER])
def test_launch_subcommand_alias_and_implicit(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[GatewayConfig] = []

    async def gateway(config: GatewayConfig, stop: asyncio.Event) -> None:
        seen.append(config)

    monkeypatch.setattr(app, "serve", gateway)
    assert cli.main(argv) == 0
    assert [url.url for url in seen[0].worker_urls] == ["grpc://127.0.0.1:50051"]


@pytest.mark.parametrize("flag", UNSUPPORTED_FLAGS)
def test_launch_refuses_unsupported_flags(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fail(["launch", *WORKER, f"--{flag}", "x"], capsys)
    assert err == f"smg: --{flag} is not supported yet\n"


def test_refused_flag_fails_even_without_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    # A flag SMG takes bare: the refusal names the first unsupported flag.
    argv = ["--worker-urls", "grpc://localhost:50051", "--enable-igw", "--epd-disaggregation",
            "--model-path", LLAMA]  # fmt: skip
    assert _fail(argv, capsys) == "smg: --enable-igw is not supported yet\n"


BUILT = available_policies()


def test_every_policy_the_routing_package_builds_is_available() -> None:
    assert {"random", "round_robin"} <= set(BUILT) < set(SMG_POLICIES)
    assert {"passthrough", "bucket"}.isdisjoint(BUILT)  # SMG names with no PolicyName here


@pytest.mark.parametrize("policy", [p for p in SMG_POLICIES if p not in BUILT])
@pytest.mark.parametrize(
    "argv",
    [["launch", *WORKER, "--policy"], ["serve", "--model-path", "/m", "--policy"],
     ["serve", "--model-path", "/m", "--router-policy"]],
)  # fmt: skip
def test_unsupported_policies(argv: list[str], policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fail([*argv, policy], capsys)
    assert err == f"smg: policy {policy} is not supported yet; supported: {', '.join(BUILT)}\n"


@pytest.mark.parametrize("policy", BUILT)
def test_built_policies_are_accepted(policy: str) -> None:
    assert cli.parse_launch([*WORKER, "--policy", policy]).policy == policy


def test_a_policy_the_routing_package_refuses_is_unsupported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataplane.routing as routing

    make_policy = routing.make_policy

    def not_yet(name: str, config: PolicyConfig | None = None) -> object:
        if name == "cache_aware":
            raise NotImplementedError("policy cache_aware is not built yet")
        return make_policy(name, config)  # type: ignore[arg-type]

    monkeypatch.setattr(routing, "make_policy", not_yet)
    err = _fail(["launch", *WORKER, "--policy", "cache_aware"], capsys)
    assert err.startswith("smg: policy cache_aware is not supported yet; supported: random, round_robin")
    assert "cache_aware" not in err.split("supported:")[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["launch"], "smg: at least one worker url is required"),
        (["launch", "--worker-urls", "ftp://w:1"], "smg: worker url 'ftp://w:1': scheme must be"),
        (["launch", *WORKER, "--health-failure-threshold", "0"], "smg: health thresholds must be at least 1"),
        (["launch", *WORKER, "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
        (["launch", *WORKER, "--policy", "fastest"], "invalid choice: 'fastest'"),
        (["launch", *WORKER, "--pol", "random"], "unrecognized arguments: --pol"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_and_config_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert message in _fail(argv, capsys)


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("launch", "start", "serve"):
        assert command in out
    assert cli.main([]) == 1
    capsys.readouterr()
    assert cli.main(["-V"]) == 0
    assert capsys.readouterr().out.startswith("smg ")


def test_launch_port_in_use_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = str(squatter.getsockname()[1])
        assert cli.main(["launch", *WORKER, "--host", "127.0.0.1", "--port", port]) == 1
    assert "smg: cannot serve: " in capsys.readouterr().err


async def test_launch_runs_until_sigterm(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["-m", "adapters.cli", *WORKER, "--host", "127.0.0.1", "--port", str(port), "--log-level", "debug",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", "0"]  # fmt: skip
    log = tmp_path / "smg.log"
    with log.open("wb") as sink:
        smg = await asyncio.create_subprocess_exec(sys.executable, *argv, cwd=REPO, stderr=sink)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not await _ok(f"http://127.0.0.1:{port}/health"):  # waits for start-up, orders nothing
            assert loop.time() < deadline and smg.returncode is None, log.read_text()
            await asyncio.sleep(0.05)
        smg.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(smg.wait(), 20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            smg.kill()
    # One line per record: timestamp, level, logger.
    assert re.search(
        r"^\d{4}-\d\d-\d\d [\d:,]+ INFO smg: received SIGTERM, shutting down$", log.read_text(), re.M
    )


async def _ok(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as reply:
            return reply.status == 200
    except aiohttp.ClientError:
        return False


@pytest.mark.parametrize("command", ["launch", "serve"])
def test_subcommand_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"supported: {', '.join(BUILT)}" in out
    assert "--api-key" in out  # named among the refused flags


# ---- smg serve --------------------------------------------------------------------------------------


def test_serve_defaults_match_smg() -> None:
    plan = cli.parse_serve(["--model-path", LLAMA])
    assert (plan.engine.backend, plan.engine.mode) == ("sglang", "grpc")
    assert (plan.gateway.host, plan.gateway.port) == ("127.0.0.1", 8080)
    assert (plan.data_parallel_size, plan.worker_host, plan.worker_base_port) == (1, "127.0.0.1", 31000)
    assert plan.startup_timeout == 300
    assert plan.gateway.model_path == plan.engine.model_path == LLAMA
    assert plan.gateway.policy == "cache_aware"
    assert plan.engine.extra_args == ()


def test_serve_backend_default_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMG_DEFAULT_BACKEND", "vllm")
    assert cli.parse_serve(["--model", LLAMA]).engine.backend == "vllm"


@pytest.mark.parametrize(
    ("argv", "backend", "mode", "dp", "port"),
    [
        (["--backend", "sglang", "--model-path", LLAMA, "--data-parallel-size", "2",
          "--connection-mode", "grpc", "--host", "0.0.0.0", "--port", "30000"], "sglang", "grpc", 2, 30000),
        (["--backend", "vllm", "--model", LLAMA, "--data-parallel-size", "2", "--host", "0.0.0.0",
          "--port", "30000"], "vllm", "grpc", 2, 30000),
        (["--backend", "trtllm", "--model", LLAMA, "--data-parallel-size", "2", "--host", "0.0.0.0",
          "--port", "30000"], "trtllm", "grpc", 2, 30000),
        # The engine image example (docker run … serve …).
        (["--backend", "sglang", "--model-path", f"/models/{LLAMA}", "--port", "30000"],
         "sglang", "grpc", 1, 30000),
        (["--backend", "vllm", "--model", LLAMA, "--connection-mode", "http", "--dp-size", "3"],
         "vllm", "http", 3, 8080),
    ],
)  # fmt: skip
def test_serve_getting_started(argv: list[str], backend: str, mode: str, dp: int, port: int) -> None:
    plan = cli.parse_serve(argv)
    assert (plan.engine.backend, plan.engine.mode, plan.data_parallel_size) == (backend, mode, dp)
    assert plan.gateway.port == port
    assert plan.engine.model_path.endswith(LLAMA)
    assert plan.gateway.model_path == plan.engine.model_path


@pytest.mark.parametrize(
    ("backend", "runtime"),
    [("sglang", "sglang"), ("vllm", "vllm"), ("trtllm", "trtllm"), ("reference", "auto")],
)
def test_serve_tells_the_gateway_which_service_its_workers_speak(backend: str, runtime: str) -> None:
    plan = cli.parse_serve(["--backend", backend, "--model", "/m"])
    assert plan.gateway.runtime == runtime


@pytest.mark.parametrize(
    ("argv", "runtime"),
    [
        ([], "auto"),
        (["--backend", "vllm"], "vllm"),
        (["--runtime", "sglang"], "sglang"),
        (["--backend", "trtllm"], "trtllm"),
    ],
)
def test_launch_backend_names_the_workers_service(argv: list[str], runtime: str) -> None:
    assert cli.parse_launch(["--worker-urls", "grpc://h:1", *argv]).runtime == runtime


@pytest.mark.parametrize("backend", ["tokenspeed", "mlx", "openai", "anthropic", "gemini"])
def test_launch_refuses_runtimes_it_does_not_speak(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["launch", "--worker-urls", "grpc://h:1", "--backend", backend]) != 0
    assert f"--backend {backend} is not supported yet" in capsys.readouterr().err


def test_serve_reference_defaults_to_the_embedded_model() -> None:
    plan = cli.parse_serve(["--backend", "reference", "--data-parallel-size", "2"])
    assert (Path(plan.engine.model_path) / "tokenizer.json").is_file()
    assert plan.engine.served_model_name == plan.gateway.served_model_name == EMBEDDED_MODEL_NAME
    assert plan.gateway.model_path == plan.engine.model_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "sglang"], "smg: --model-path is required for the sglang backend"),
        (["--backend", "trtllm", "--model", "/m", "--connection-mode", "http"],
         "smg: the trtllm backend supports only --connection-mode grpc"),
        (["--backend", "tokenspeed", "--model", "/m"], "smg: --backend tokenspeed is not supported yet"),
        (["--backend", "vllm", "--model", "/m", "--connection-mode", "zmq"],
         "smg: --connection-mode zmq is not supported yet"),
        (["--model", "/m", "--router-dp-aware"], "smg: --router-dp-aware is not supported yet"),
        (["--model", "/m", "--router-cache-threshold", "1.5"],
         "smg: cache_threshold must be between 0 and 1"),
        (["--model", "/m", "--block-size", "x"], "smg: --block-size: invalid value 'x'"),
        (["--model", "/m", "--router-api-key", "k"], "smg: --router-api-key is not supported yet"),
        (["--model", "/m", "--data-parallel-size", "0"], "smg: --data-parallel-size must be at least 1"),
        (["--model", "/m", "--worker-base-port", "70000"], "smg: --worker-base-port 70000 out of range"),
        (["--model", "/m", "--worker-startup-timeout", "0"],
         "smg: --worker-startup-timeout must be positive"),
        (["--model", "/m", "--router-request-timeout-secs", "0"],
         "smg: request_timeout_secs must be positive"),
        (["--model", "/m", "--tp-size", "two"], "smg: tensor-parallel size must be an integer"),
    ],
)  # fmt: skip
def test_serve_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _fail(["serve", *argv], capsys).startswith(message)


def test_serve_checks_gpus_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    err = _fail(["serve", "--model", "/m", "--dp-size", "2", "--tp-size", "2"], capsys)
    assert "CUDA_VISIBLE_DEVICES lists 2 GPU(s) but data-parallel rank 1" in err


@pytest.mark.parametrize(
    ("argv", "policy", "timeout", "engine_args"),
    [
        (["--router-policy", "random"], "random", 1800, []),
        # Router-only flags without the prefix go to the router, never to the engine.
        (["--policy", "random", "--request-timeout-secs", "9"], "random", 9, []),
        (["--router-policy", "round_robin", "--policy", "random"], "round_robin", 1800, []),
        # With the fallback off, an unprefixed flag is the engine's.
        (["--router-disable-arg-fallback", "--policy", "random"], "cache_aware", 1800,
         ["--policy", "random"]),
        (["--tp-size", "2", "--mem-fraction-static=0.8", "--enable-metrics"], "cache_aware", 1800,
         ["--tp-size", "2", "--mem-fraction-static=0.8", "--enable-metrics"]),
    ],
)  # fmt: skip
def test_serve_router_prefix_and_fallback(
    argv: list[str], policy: str, timeout: float, engine_args: list[str]
) -> None:
    plan = cli.parse_serve(["--model", "/m", *argv])
    assert (plan.gateway.policy, plan.gateway.request_timeout_secs) == (policy, timeout)
    assert list(plan.engine.extra_args) == engine_args


@pytest.mark.parametrize(
    ("argv", "template", "level", "engine_args"),
    [
        (["--chat-template", "/t.jinja", "--log-level", "DEBUG"], "/t.jinja", "debug",
         ["--chat-template", "/t.jinja", "--log-level", "DEBUG"]),
        (["--chat-template", "/t.jinja", "--router-chat-template", "/r.jinja"], "/r.jinja", "info",
         ["--chat-template", "/t.jinja"]),
        # An engine's log level that the router does not have stays the engine's.
        (["--log-level", "critical"], None, "info", ["--log-level", "critical"]),
        (["--router-disable-arg-fallback", "--chat-template", "/t.jinja"], None, "info",
         ["--chat-template", "/t.jinja"]),
    ],
)  # fmt: skip
def test_serve_shared_flags_reach_engine_and_router(
    argv: list[str], template: str | None, level: str, engine_args: list[str]
) -> None:
    plan = cli.parse_serve(["--model", "/m", *argv])
    assert (plan.gateway.chat_template, plan.gateway.log_level) == (template, level)
    assert list(plan.engine.extra_args) == engine_args


def test_serve_takes_router_knobs_and_shares_the_block_size_with_the_engine() -> None:
    plan = cli.parse_serve(
        ["--backend", "vllm", "--model", "/m", "--router-cache-threshold", "0.6", "--cb-failure-threshold",
         "2", "--block-size", "32"]
    )  # fmt: skip
    assert plan.gateway.routing.cache_threshold == 0.6
    assert plan.gateway.cb_failure_threshold == 2
    assert plan.gateway.routing.block_size == 32
    assert plan.engine.extra_args == ("--block-size", "32")


def test_serve_router_overrides_and_served_name() -> None:
    plan = cli.parse_serve(
        ["--model", "/m", "--router-model-path", "/tok-model", "--router-tokenizer-path", "/tok",
         "--served-model-name", "llama", "--router-health-check-interval-secs", "3"]
    )  # fmt: skip
    assert (plan.gateway.model_path, plan.gateway.tokenizer_path) == ("/tok-model", "/tok")
    assert plan.engine.model_path == "/m"
    assert plan.gateway.served_model_name == plan.engine.served_model_name == "llama"
    assert plan.gateway.health_check_interval_secs == 3
    assert plan.engine.extra_args == ("--served-model-name", "llama")
