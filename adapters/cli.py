"""The ``smg`` command: ``smg launch`` (alias ``start``) runs the gateway in front of running workers;
``smg serve`` starts engine workers first and runs the gateway in front of them.

``smg --flag …`` means ``smg launch --flag …``, as in SMG. Exit codes: 0 after a clean shutdown,
2 for a usage or configuration error (nothing was started), 1 when starting or serving failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import Any

import uvloop

from adapters.engines import BACKENDS, Backend, EngineSpec, ServePlan, engine_env, flag_value, worker_url
from adapters.router_args import (
    LOG_LEVELS,
    SUPPORTED_FLAGS,
    UNSUPPORTED_FLAGS,
    UnsupportedOption,
    add_refused,
    add_supported,
    check_policy,
    config_fields,
)
from dataplane.config import GatewayConfig, HistoryConfig, PolicyConfig, Runtime, TracingConfig, WorkerUrl
from dataplane.embedded import EMBEDDED_MODEL_NAME, embedded_model_dir
from dataplane.errors import ConfigError

logger = logging.getLogger("smg")

# Hard-wrapped (RawDescriptionHelpFormatter): argparse would break flag names at their hyphens.
_REFUSED_EPILOG = """\
Every other SMG router flag (--pd-disaggregation, --api-key, --dp-aware,
--enable-mesh, --mcp-config-path, --service-discovery, ...) is recognised
and refused until it is supported."""
_SERVE_EPILOG = f"""\
Router flags take the prefix --router- (--router-policy random). Without the
prefix, router-only flags (--policy, --request-timeout-secs, --health-*, ...) go
to the router and not to the engine; --tokenizer-path, --chat-template and
--log-level go to the engine and the router falls back to them.
--router-disable-arg-fallback turns both fallbacks off. Every other argument is
passed through to the engine command (the gateway also reads the engine's
--served-model-name).

{_REFUSED_EPILOG}"""

# `smg serve` owns --host/--port and computes the worker URLs; its --model-path is the engine's.
_SERVE_FLAGS = [flag for flag in SUPPORTED_FLAGS if not flag.launch_only]
# The gateway's client for the workers `smg serve` starts (the reference worker serves any of the three:
# asked at registration).
SERVE_RUNTIMES: dict[Backend, Runtime] = {
    "sglang": "sglang",
    "vllm": "vllm",
    "reference": "auto",
    "trtllm": "trtllm",
}
_FALLBACK_FLAGS = [flag for flag in _SERVE_FLAGS if not flag.shared and flag.field != "model_path"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smg`` console script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args)
    except SystemExit as exc:  # argparse: --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    except (UnsupportedOption, ConfigError) as exc:
        print(f"smg: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: list[str]) -> int:
    command = args[0] if args else None
    if command in ("launch", "start"):
        return _launch(args[1:])
    if command == "serve":
        return _serve(args[1:])
    if command is not None and command.startswith("-") and command not in ("-h", "--help", "-V", "--version"):
        return _launch(args)
    top = _top_parser()
    top.parse_args(args)  # answers --help/--version, refuses an unknown command
    top.print_help()
    return 1


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smg", description="Shepherd Model Gateway (Python, gRPC-first).")
    parser.add_argument("-V", "--version", action="version", version=f"smg {_version()}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="{launch,start,serve}")
    commands.add_parser("launch", aliases=["start"], help="run the gateway in front of running workers")
    commands.add_parser("serve", help="start engine workers, then the gateway in front of them")
    return parser


# ---- smg launch -------------------------------------------------------------------------------------


def launch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smg launch",
        description="Run the gateway in front of workers that are already running.",
        epilog=_REFUSED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_supported(parser, "", SUPPORTED_FLAGS, "router options")
    add_refused(parser, "")
    return parser


def parse_launch(args: Sequence[str]) -> GatewayConfig:
    """The gateway configuration of ``smg launch ARGS``; raises on anything unsupported or invalid."""
    fields = config_fields(launch_parser().parse_args(args), "", SUPPORTED_FLAGS)
    for name in ("policy", "prefill_policy", "decode_policy"):
        check_policy(fields.get(name))
    return gateway_config(fields)


def gateway_config(fields: dict[str, Any], **overrides: Any) -> GatewayConfig:
    """``GatewayConfig`` from parsed flag values (lists become the tuples the config holds)."""
    values = fields | overrides
    routing = {
        key.removeprefix("routing."): values.pop(key) for key in list(values) if key.startswith("routing.")
    }
    if routing:
        values["routing"] = PolicyConfig(**routing)
    history = {
        key.removeprefix("history."): values.pop(key) for key in list(values) if key.startswith("history.")
    }
    if history:
        if "postgres_db_url" not in history and os.environ.get("POSTGRES_DB_URL"):
            history["postgres_db_url"] = os.environ["POSTGRES_DB_URL"]  # as SMG's Python CLI reads it
        values["history"] = HistoryConfig(**history)
    tracing = {
        key.removeprefix("tracing."): values.pop(key) for key in list(values) if key.startswith("tracing.")
    }
    if tracing:
        values["tracing"] = TracingConfig(**tracing)
    values["worker_urls"] = tuple(WorkerUrl.parse(url) for url in values.get("worker_urls", ()))
    values["prefill"] = tuple(_prefill_worker(item) for item in values.get("prefill", ()))
    values["decode"] = tuple(WorkerUrl.parse(url) for url in values.get("decode", ()))
    for name in ("request_id_headers", "prometheus_duration_buckets"):
        if name in values:
            values[name] = tuple(values[name])
    return GatewayConfig(**values)


def _prefill_worker(item: Sequence[str]) -> tuple[WorkerUrl, int | None]:
    """``--prefill URL [BOOTSTRAP_PORT]`` (SMG also takes the port ``none``: the default)."""
    if len(item) > 2:
        raise ConfigError(f"--prefill takes a URL and at most one bootstrap port, got {' '.join(item)}")
    url = WorkerUrl.parse(item[0])
    if len(item) == 1 or item[1].lower() == "none":
        return url, None
    try:
        port = int(item[1])
    except ValueError:
        raise ConfigError(f"--prefill {item[0]}: bootstrap port {item[1]!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"--prefill {item[0]}: bootstrap port {port} out of range")
    return url, port


def _launch(args: list[str]) -> int:
    config = parse_launch(args)
    # The gateway (and its gRPC stubs) load only once there is something to run: --help stays instant.
    from adapters import app, logs, telemetry

    with (
        logs.configured(config.log_level, json=config.log_json, log_dir=config.log_dir),
        telemetry.installed(config.tracing),
    ):
        return _run(lambda stop: app.serve(config, stop))


# ---- smg serve --------------------------------------------------------------------------------------


def serve_parser(fallback: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smg serve",
        description="Start engine workers (one per data-parallel rank), wait until they serve, then run\n"
        "the gateway in front of them. Stops them all on exit.",
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    default_backend = os.environ.get("SMG_DEFAULT_BACKEND", "sglang")
    serve = parser.add_argument_group("serve options")
    serve.add_argument(
        "--backend",
        default=default_backend,
        choices=(*BACKENDS, "tokenspeed"),
        help="inference engine; 'reference' runs our reference workers with the embedded "
        f"{EMBEDDED_MODEL_NAME} tokenizer, no GPU needed (default: $SMG_DEFAULT_BACKEND or "
        f"sglang, now {default_backend})",
    )
    serve.add_argument(
        "--connection-mode",
        default="grpc",
        choices=("grpc", "http", "zmq"),
        help="how the gateway talks to the workers; trtllm is grpc only (default: grpc)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="gateway address (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="gateway port (default: 8080)")
    serve.add_argument(
        "--data-parallel-size",
        "--dp-size",
        dest="data_parallel_size",
        type=int,
        default=1,
        help="number of worker processes, one per data-parallel rank (default: 1)",
    )
    serve.add_argument("--worker-host", default="127.0.0.1", help="worker address (default: 127.0.0.1)")
    serve.add_argument(
        "--worker-base-port",
        type=int,
        default=31000,
        help="workers take the free ports from here up (default: 31000)",
    )
    serve.add_argument(
        "--worker-startup-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for every worker to be ready (default: 300)",
    )
    serve.add_argument(
        "--model-path",
        "--model",
        dest="model_path",
        help="model for the engine and the gateway's tokenizer (required, except for the "
        "reference backend, which defaults to the embedded model)",
    )
    serve.add_argument(
        "--enable-token-usage-details",
        action="store_true",
        help="HTTP mode: ask the engine for prompt-token details (sglang, vllm)",
    )
    serve.add_argument(
        "--router-disable-arg-fallback",
        action="store_true",
        help="take router settings from --router-* flags only",
    )
    add_supported(parser, "router-", _SERVE_FLAGS, "router options")
    add_refused(parser, "router-")
    if fallback:
        add_supported(parser, "", _FALLBACK_FLAGS, "router options also taken without the prefix")
    return parser


def parse_serve(args: Sequence[str]) -> ServePlan:
    """The plan of ``smg serve ARGS``, validated before anything starts."""
    fallback = "--router-disable-arg-fallback" not in args
    ns, engine_args = serve_parser(fallback).parse_known_args(args)
    engine = _engine_spec(ns, engine_args)
    router = _router_fields(ns, engine_args, fallback)
    check_policy(router.get("policy"))
    # Validated now with a placeholder worker URL; the real ones replace it once the ports are known.
    gateway = gateway_config(
        {"model_path": engine.model_path, "served_model_name": engine.served_model_name} | router,
        runtime=SERVE_RUNTIMES[engine.backend],
        worker_urls=[worker_url(engine.mode, ns.worker_host, 1)],
        host=ns.host,
        port=ns.port,
    )
    for rank in range(ns.data_parallel_size):
        engine_env(engine, rank, os.environ)  # fails now, not after rank 0 has started, on too few GPUs
    return ServePlan(
        engine=engine,
        data_parallel_size=ns.data_parallel_size,
        worker_host=ns.worker_host,
        worker_base_port=ns.worker_base_port,
        startup_timeout=ns.worker_startup_timeout,
        gateway=gateway,
    )


def _engine_spec(ns: argparse.Namespace, engine_args: list[str]) -> EngineSpec:
    if ns.backend == "tokenspeed":
        raise UnsupportedOption("--backend tokenspeed is not supported yet")
    if ns.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {ns.backend!r} (from SMG_DEFAULT_BACKEND); one of {BACKENDS}")
    if ns.connection_mode == "zmq":
        raise UnsupportedOption("--connection-mode zmq is not supported yet")
    backend: Backend = ns.backend
    served = flag_value(engine_args, ("--served-model-name",))
    model_path = ns.model_path
    if backend == "reference" and model_path is None:
        model_path, served = str(embedded_model_dir()), served or EMBEDDED_MODEL_NAME
    return EngineSpec(
        backend=backend,
        mode=ns.connection_mode,
        model_path=model_path or "",
        served_model_name=served,
        extra_args=tuple(engine_args),
        token_usage_details=ns.enable_token_usage_details,
    )


def _router_fields(ns: argparse.Namespace, engine_args: list[str], fallback: bool) -> dict[str, Any]:
    """Router settings: ``--router-*`` flags win over the unprefixed fallbacks."""
    fields: dict[str, Any] = {}
    if fallback:
        fields |= config_fields(ns, "", _FALLBACK_FLAGS)
        for flag in (flag for flag in SUPPORTED_FLAGS if flag.shared):
            value = flag_value(engine_args, (f"--{flag.name}",))
            if value is not None and flag.field == "log_level":
                # An engine's own level that the router lacks (sglang's "critical") stays the engine's.
                value = value.lower() if value.lower() in LOG_LEVELS else None
            if value is not None:
                fields[flag.field] = _typed(flag.name, flag.options.get("type"), value)
    return fields | config_fields(ns, "router-", _SERVE_FLAGS)


def _typed(name: str, kind: Callable[[str], Any] | None, value: str) -> Any:
    try:
        return value if kind is None else kind(value)
    except ValueError:
        raise ConfigError(f"--{name}: invalid value {value!r}") from None


def _serve(args: list[str]) -> int:
    plan = parse_serve(args)
    from adapters import logs, supervisor, telemetry  # heavy, as in _launch

    g = plan.gateway
    with logs.configured(g.log_level, json=g.log_json, log_dir=g.log_dir), telemetry.installed(g.tracing):
        for arg in plan.engine.extra_args:
            if arg.startswith("--") and arg[2:].partition("=")[0] in UNSUPPORTED_FLAGS:
                logger.warning("%s goes to the engine only: the gateway does not support it yet", arg)
        try:
            return _run(lambda stop: supervisor.run_serve(plan, stop))
        except supervisor.WorkerStartupError as exc:
            print(f"smg: {exc}", file=sys.stderr)
            return 1


# ---- running ----------------------------------------------------------------------------------------


def _run(body: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``body(stop)`` on a uvloop event loop, ``stop`` being set by SIGINT or SIGTERM."""
    try:
        uvloop.run(_until_signalled(body))
    except OSError as exc:  # e.g. the gateway's port is taken
        print(f"smg: cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


async def _until_signalled(body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    try:
        await body(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    logger.info("received %s, shutting down", sig.name)
    stop.set()


def _version() -> str:
    try:
        return metadata.version("smg-py")
    except metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
