"""SMG's router flags as data: the ones the gateway honours today, and all the others, refused by name.

``smg launch`` takes them as they are; ``smg serve`` takes them prefixed ``--router-…``. Supported
flags default to ``argparse.SUPPRESS`` so that a namespace holds only what the user gave, and the
defaults live in one place: ``GatewayConfig``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

from dataplane.config import (
    HISTORY_BACKENDS,
    RUNTIMES,
    TRACE_PROTOCOLS,
    AssignmentMode,
    GatewayConfig,
    HistoryConfig,
    PolicyConfig,
)
from parsers import REASONING_PARSER_NAMES, TOOL_PARSER_NAMES

SMG_POLICIES = (
    "random", "round_robin", "passthrough", "cache_aware", "power_of_two",
    "least_load", "prefix_hash", "consistent_hashing", "manual", "bucket",
)  # fmt: skip
LOG_LEVELS = ("debug", "info", "warn", "error")
SMG_HISTORY_BACKENDS = ("memory", "none", "oracle", "postgres", "redis")

# Every other SMG router flag (Rust `smg launch` and the Python wheel's router_args), grouped as SMG's
# help groups them. Each one is refused until the feature behind it exists: a flag that is accepted and
# then ignored would misconfigure a deployment silently.
UNSUPPORTED_FLAGS: tuple[str, ...] = (
    # workers / server
    "health-check-port", "shutdown-grace-period-secs", "cors-allowed-origins", "enable-igw",
    "model-alias", "runtime-worker-threads",
    # routing
    "encode-policy", "dp-aware", "dp-minimum-tokens-scheduler",
    "engine-metrics", "bucket-adjust-interval-secs",
    # PD / EPD disaggregation
    "epd-disaggregation", "encode",
    "worker-startup-timeout-secs", "worker-startup-check-interval", "worker-startup-delay",
    # reliability
    "drain-settle-secs",
    "max-concurrent-requests", "queue-size", "queue-timeout-secs", "rate-limit-tokens-per-second",
    "priority-scheduler-enabled", "priority-scheduler-default-max-class", "priority-scheduler-config",
    "priority-scheduler-tenant-metric-top-n", "tenant-rate-limit-enabled", "tenant-rate-limit-config",
    # tokenizer / parsers / MCP
    "disable-tokenizer-autoload",
    "mcp-config-path",
    # storage
    "oracle-wallet-path", "oracle-tns-alias", "oracle-dsn", "oracle-connect-descriptor", "oracle-user",
    "oracle-username", "oracle-password", "oracle-external-auth", "oracle-pool-min", "oracle-pool-max",
    "oracle-pool-timeout-secs", "schema-config", "storage-hook-wasm-path", "enable-wasm",
    "storage-context-headers",
    # security / auth
    "api-key", "tenant-api-key", "trust-tenant-header", "tenant-header-name", "control-plane-api-keys",
    "jwt-issuer", "jwt-audience", "jwt-jwks-uri", "jwt-role-claim", "jwt-role-mapping",
    "disable-audit-logging", "control-plane-audit-enabled", "tls-cert-path", "tls-key-path",
    "client-cert-path", "client-key-path", "ca-cert-paths",
    # observability / logging / mesh / multimodal / WebRTC
    "enable-mesh", "mesh-server-name", "mesh-host",
    "mesh-advertise-host", "mesh-port", "mesh-peer-urls", "multimodal-tensor-transport",
    "multimodal-shm-min-bytes", "webrtc-bind-addr", "webrtc-stun-server",
    # Kubernetes service discovery
    "service-discovery", "selector", "prefill-selector", "decode-selector", "encode-selector",
    "service-discovery-port", "service-discovery-namespace", "model-id-from", "router-selector",
)  # fmt: skip


class UnsupportedOption(Exception):
    """A recognised SMG option or value that this gateway does not implement yet."""


@dataclass(frozen=True, slots=True)
class RouterFlag:
    """One supported router flag and the ``GatewayConfig`` field it sets."""

    name: str
    field: str
    options: dict[str, Any]
    help: str
    aliases: tuple[str, ...] = ()
    # Flags that engines take too (SGLang has --chat-template, --log-level…): `smg serve` passes them
    # through to the engine and lets the router fall back to them.
    shared: bool = False
    # Only `smg launch` has them; `smg serve` owns --host/--port and computes the worker URLs.
    launch_only: bool = False


_POLICY_HELP = "routing policy; every SMG policy name is recognised"


# SMG's `--backend` (alias `--runtime`) values: the engine service of the gRPC workers, or a proxy mode.
SMG_RUNTIMES = ("auto", "sglang", "vllm", "trtllm", "tokenspeed", "mlx", "openai", "anthropic", "gemini")


def runtime(value: str) -> str:
    """``--backend``'s type: SMG's runtimes we do not speak are refused by name, unknown ones by argparse."""
    if value in SMG_RUNTIMES and value not in RUNTIMES:
        raise UnsupportedOption(
            f"--backend {value} is not supported yet; supported: {', '.join(RUNTIMES)} "
            "(auto asks each gRPC worker which service it serves)"
        )
    return value


def history_backend(value: str) -> str:
    """``--history-backend``'s type: SMG's ``oracle`` is refused by name, an unknown name by argparse."""
    if value in SMG_HISTORY_BACKENDS and value not in HISTORY_BACKENDS:
        raise UnsupportedOption(
            f"history backend {value} is not supported yet; supported: {', '.join(HISTORY_BACKENDS)}"
        )
    return value


SUPPORTED_FLAGS: tuple[RouterFlag, ...] = (
    RouterFlag("host", "host", {"metavar": "HOST"}, "address to listen on", launch_only=True),
    RouterFlag("port", "port", {"type": int, "metavar": "PORT"}, "port to listen on", launch_only=True),
    RouterFlag(
        "worker-urls", "worker_urls", {"nargs": "+", "action": "extend", "metavar": "URL"},
        "worker URLs; grpc:// for gRPC workers, http(s):// for OpenAI-HTTP workers", launch_only=True,
    ),
    RouterFlag("pd-disaggregation", "pd_disaggregation", {"action": "store_true"},
               "prefill/decode disaggregation over --prefill and --decode workers (SGLang, gRPC)",
               launch_only=True),
    RouterFlag(
        "prefill", "prefill", {"nargs": "+", "action": "append", "metavar": ("URL", "BOOTSTRAP_PORT")},
        "a prefill worker and, optionally, its bootstrap port (default 8998); repeat for more",
        launch_only=True,
    ),
    RouterFlag("decode", "decode", {"nargs": "+", "action": "extend", "metavar": "URL"},
               "decode worker URL(s)", launch_only=True),
    RouterFlag("prefill-policy", "prefill_policy", {"choices": SMG_POLICIES, "metavar": "POLICY"},
               "policy picking the prefill worker (default: --policy)", launch_only=True),
    RouterFlag("decode-policy", "decode_policy", {"choices": SMG_POLICIES, "metavar": "POLICY"},
               "policy picking the decode worker (default: --policy)", launch_only=True),
    RouterFlag(
        "backend", "runtime", {"type": runtime, "choices": RUNTIMES, "metavar": "RUNTIME"},
        "engine service of the gRPC workers: auto (asked at registration), sglang, vllm or trtllm",
        ("runtime",), launch_only=True,
    ),
    RouterFlag("model-path", "model_path", {"metavar": "PATH"},
               "model directory the tokenizer is loaded from", ("model",)),
    RouterFlag("tokenizer-path", "tokenizer_path", {"metavar": "PATH"},
               "tokenizer directory (overrides the model path)", shared=True),
    RouterFlag("chat-template", "chat_template", {"metavar": "PATH"}, "Jinja chat template file override",
               shared=True),
    RouterFlag("policy", "policy", {"choices": SMG_POLICIES, "metavar": "POLICY"}, _POLICY_HELP),
    RouterFlag("request-timeout-secs", "request_timeout_secs", {"type": float, "metavar": "SECS"},
               "timeout of a request to a worker"),
    RouterFlag("max-payload-size", "max_payload_size", {"type": int, "metavar": "BYTES"},
               "largest request body"),
    RouterFlag("health-check-interval-secs", "health_check_interval_secs", {"type": float, "metavar": "SECS"},
               "time between worker health checks"),
    RouterFlag("health-check-timeout-secs", "health_check_timeout_secs", {"type": float, "metavar": "SECS"},
               "timeout of one worker health check"),
    RouterFlag("health-check-endpoint", "health_check_endpoint", {"metavar": "PATH"},
               "path health-checked on HTTP workers (gRPC workers answer HealthCheck)"),
    RouterFlag("health-failure-threshold", "health_failure_threshold", {"type": int, "metavar": "N"},
               "consecutive failed checks that mark a worker unhealthy"),
    RouterFlag("health-success-threshold", "health_success_threshold", {"type": int, "metavar": "N"},
               "consecutive good checks that mark a worker healthy again"),
    RouterFlag("disable-health-check", "disable_health_check", {"action": "store_true"},
               "do not health-check workers"),
    RouterFlag("remove-unhealthy-workers", "remove_unhealthy_workers", {"action": "store_true"},
               "remove workers whose health checks failed for good"),
    # reliability
    RouterFlag("retry-max-retries", "retry_max_retries", {"type": int, "metavar": "N"},
               "attempts per request, the first included"),
    RouterFlag("retry-initial-backoff-ms", "retry_initial_backoff_ms", {"type": float, "metavar": "MS"},
               "wait before the first retry"),
    RouterFlag("retry-max-backoff-ms", "retry_max_backoff_ms", {"type": float, "metavar": "MS"},
               "longest wait between attempts"),
    RouterFlag("retry-backoff-multiplier", "retry_backoff_multiplier", {"type": float, "metavar": "X"},
               "growth of the wait per attempt"),
    RouterFlag("retry-jitter-factor", "retry_jitter_factor", {"type": float, "metavar": "F"},
               "random spread of each wait, as a fraction of it"),
    RouterFlag("disable-retries", "disable_retries", {"action": "store_true"}, "one attempt per request"),
    RouterFlag("cb-failure-threshold", "cb_failure_threshold", {"type": int, "metavar": "N"},
               "consecutive failed requests that open a worker's circuit breaker"),
    RouterFlag("cb-success-threshold", "cb_success_threshold", {"type": int, "metavar": "N"},
               "consecutive good requests that close a half-open breaker"),
    RouterFlag("cb-timeout-duration-secs", "cb_timeout_duration_secs", {"type": float, "metavar": "SECS"},
               "time an open breaker keeps its worker out before trying it again"),
    RouterFlag("cb-window-duration-secs", "cb_window_duration_secs", {"type": float, "metavar": "SECS"},
               "accepted for compatibility; unused, as in SMG"),
    RouterFlag("disable-circuit-breaker", "disable_circuit_breaker", {"action": "store_true"},
               "never shut a worker out for failed requests"),
    # routing knobs
    RouterFlag("load-monitor-interval", "load_monitor_interval", {"type": float, "metavar": "SECS"},
               "GetLoads polling period for load-aware policies"),
    RouterFlag("cache-threshold", "routing.cache_threshold", {"type": float, "metavar": "F"},
               "cache_aware: prefix match ratio that follows the cache"),
    RouterFlag("balance-abs-threshold", "routing.balance_abs_threshold", {"type": int, "metavar": "N"},
               "cache_aware: load gap that counts as imbalance"),
    RouterFlag("balance-rel-threshold", "routing.balance_rel_threshold", {"type": float, "metavar": "X"},
               "cache_aware: load ratio that counts as imbalance"),
    RouterFlag("balance-token-usage-threshold", "routing.balance_token_usage_threshold",
               {"type": float, "metavar": "F"}, "cache_aware: KV usage spread that forces the least loaded"),
    RouterFlag("overload-token-usage-threshold", "routing.overload_token_usage_threshold",
               {"type": float, "metavar": "F"}, "cache_aware: KV usage that forces the least loaded"),
    RouterFlag("eviction-interval-secs", "routing.eviction_interval_secs", {"type": float, "metavar": "SECS"},
               "period of the policy's upkeep (tree eviction, idle sticky keys)", ("eviction-interval",)),
    RouterFlag("max-tree-size", "routing.max_tree_size", {"type": int, "metavar": "N"},
               "cache_aware: size bound of a worker's approximate tree"),
    RouterFlag("block-size", "routing.block_size", {"type": int, "metavar": "N"},
               "cache_aware: KV block size until the workers' events tell theirs", shared=True),
    RouterFlag("prefix-token-count", "routing.prefix_token_count", {"type": int, "metavar": "N"},
               "prefix_hash: prompt tokens hashed"),
    RouterFlag("prefix-hash-load-factor", "routing.prefix_hash_load_factor", {"type": float, "metavar": "X"},
               "prefix_hash: load above the mean that moves a request on"),
    RouterFlag("least-load-kv-pressure-weight", "routing.least_load_kv_pressure_weight",
               {"type": float, "metavar": "SECS"}, "least_load: weight of KV pressure"),
    RouterFlag("least-load-default-throughput", "routing.least_load_default_throughput",
               {"type": float, "metavar": "TOK/S"}, "least_load: throughput of a worker that reports none"),
    RouterFlag("least-load-mean-prefill-tokens", "routing.least_load_mean_prefill_tokens",
               {"type": int, "metavar": "N"}, "least_load: prompt size assumed when unknown"),
    RouterFlag("max-idle-secs", "routing.max_idle_secs", {"type": float, "metavar": "SECS"},
               "manual: idle time after which a routing key is forgotten"),
    RouterFlag("assignment-mode", "routing.assignment_mode", {"choices": get_args(AssignmentMode)},
               "manual: how new routing keys are placed"),
    RouterFlag("routing-key-override", "routing_key_override", {"action": "store_true"},
               "X-SMG-Routing-Key sticks requests to a worker whatever the policy"),
    RouterFlag("request-id-headers", "request_id_headers", {"nargs": "*", "metavar": "HEADER"},
               "headers searched for an incoming request id"),
    RouterFlag("log-level", "log_level", {"choices": LOG_LEVELS}, "log level", shared=True),
    RouterFlag("log-json", "log_json", {"action": "store_true"}, "log one JSON object per line"),
    RouterFlag("log-dir", "log_dir", {"metavar": "DIR"},
               "also write the log to DIR/smg.log (created when missing, rotated daily)"),
    RouterFlag("log-prompts", "log_prompts", {"action": "store_true"},
               "log prompt and completion texts (never logged otherwise)"),
    RouterFlag("prometheus-host", "prometheus_host", {"metavar": "HOST"},
               "address of the Prometheus /metrics listener (default: 0.0.0.0, or :: for an IPv6 --host)"),
    RouterFlag("prometheus-port", "prometheus_port", {"type": int, "metavar": "PORT"},
               "port of the Prometheus /metrics listener (0: any free port, logged)"),
    RouterFlag("prometheus-duration-buckets", "prometheus_duration_buckets",
               {"type": float, "nargs": "+", "metavar": "SECS"},
               "buckets of every duration, TTFT and TPOT histogram"),
    # parsers: every model's, instead of the one its name maps to ("passthrough": none)
    RouterFlag("tool-call-parser", "tool_call_parser", {"choices": TOOL_PARSER_NAMES, "metavar": "NAME"},
               f"tool-call parser: {', '.join(TOOL_PARSER_NAMES)}"),
    RouterFlag("reasoning-parser", "reasoning_parser",
               {"choices": REASONING_PARSER_NAMES, "metavar": "NAME"},
               f"reasoning parser: {', '.join(REASONING_PARSER_NAMES)}"),
    # tokenizer caches: on by default here (SMG: off); --no-… turns one off
    RouterFlag("tokenizer-cache-enable-l0", "tokenizer_cache_enable_l0",
               {"action": argparse.BooleanOptionalAction}, "whole-input tokenizer cache"),
    RouterFlag("tokenizer-cache-l0-max-entries", "tokenizer_cache_l0_max_entries",
               {"type": int, "metavar": "N"}, "inputs the L0 cache holds at most"),
    RouterFlag("tokenizer-cache-l0-max-memory", "tokenizer_cache_l0_max_memory",
               {"type": int, "metavar": "BYTES"}, "memory the L0 cache takes at most"),
    RouterFlag("tokenizer-cache-enable-l1", "tokenizer_cache_enable_l1",
               {"action": argparse.BooleanOptionalAction},
               "tokenizer cache of the text between special tokens (a conversation's earlier turns)"),
    RouterFlag("tokenizer-cache-l1-max-memory", "tokenizer_cache_l1_max_memory",
               {"type": int, "metavar": "BYTES"}, "memory the L1 cache takes at most"),
    # history storage (responses, conversations)
    RouterFlag("history-backend", "history.backend",
               {"type": history_backend, "choices": SMG_HISTORY_BACKENDS, "metavar": "BACKEND"},
               f"where responses and conversations are stored: {', '.join(HISTORY_BACKENDS)}"),
    RouterFlag("postgres-db-url", "history.postgres_db_url", {"metavar": "URL"},
               "postgres backend: postgresql://user:password@host:port/database (default: $POSTGRES_DB_URL)"),
    RouterFlag("postgres-pool-max-size", "history.postgres_pool_max_size", {"type": int, "metavar": "N"},
               "postgres backend: connections at most", ("postgres-pool-max",)),
    RouterFlag("redis-url", "history.redis_url", {"metavar": "URL"}, "redis backend: redis://host:port/db"),
    RouterFlag("redis-pool-max-size", "history.redis_pool_max_size", {"type": int, "metavar": "N"},
               "redis backend: connections at most", ("redis-pool-max",)),
    RouterFlag("redis-retention-days", "history.redis_retention_days", {"type": int, "metavar": "DAYS"},
               "redis backend: time to live of every stored key; -1 keeps them forever"),
    # tracing (OpenTelemetry, OTLP); the last two are ours, and the OTEL_* variables apply when not given
    RouterFlag("enable-trace", "tracing.enabled", {"action": "store_true"},
               "export OpenTelemetry spans over OTLP and propagate W3C trace context to workers"),
    RouterFlag("otlp-traces-endpoint", "tracing.endpoint", {"metavar": "URL"},
               "OTLP collector; http:// is prepended when missing (default: "
               "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317, "
               "or localhost:4318 for http/protobuf)"),
    RouterFlag("otlp-traces-protocol", "tracing.protocol", {"choices": TRACE_PROTOCOLS},
               "OTLP transport (default: $OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or "
               "$OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)"),
    RouterFlag("trace-sampling-ratio", "tracing.sampling_ratio", {"type": float, "metavar": "F"},
               "fraction of new traces sampled; a sampled caller's traceparent is always followed "
               "(default: $OTEL_TRACES_SAMPLER_ARG, else 1.0)"),
    # not an SMG flag: the gateway's own gRPC API (smg.gateway.v1.Tokenizer)
    RouterFlag("grpc-port", "grpc_port", {"type": int, "metavar": "PORT"},
               "serve the gateway's gRPC API (tokenize, detokenize, count, render) on this port"),
)  # fmt: skip

_DEFAULTS = (
    {f.name: f.default for f in dataclasses.fields(GatewayConfig) if f.default is not dataclasses.MISSING}
    | {f"routing.{f.name}": f.default for f in dataclasses.fields(PolicyConfig)}
    | {f"history.{f.name}": f.default for f in dataclasses.fields(HistoryConfig)}
)


class _Refuse(argparse.Action):
    """Fails as soon as argparse meets the flag, whatever values follow it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        raise UnsupportedOption(f"{option_string} is not supported yet")


def add_supported(
    parser: argparse.ArgumentParser, prefix: str, flags: Sequence[RouterFlag], title: str
) -> None:
    """Add ``flags`` as ``--{prefix}{name}``, with dests ``{prefix}{field}`` (dashes as underscores)."""
    group = parser.add_argument_group(title)
    for flag in flags:
        names = [f"--{prefix}{name}" for name in (flag.name, *flag.aliases)]
        default = _DEFAULTS.get(flag.field)
        shown = f" (default: {_shown(default)})" if default not in (None, False, ()) else ""
        text = flag.help
        if flag.field == "policy":
            text += f"; supported: {', '.join(available_policies())}"
        group.add_argument(
            *names,
            dest=prefix.replace("-", "_") + flag.field,
            default=argparse.SUPPRESS,
            help=text + shown,
            **flag.options,
        )


def add_refused(parser: argparse.ArgumentParser, prefix: str) -> None:
    """Recognise every unsupported SMG flag (``--{prefix}{name}``) and fail with a clear message."""
    for name in UNSUPPORTED_FLAGS:
        parser.add_argument(f"--{prefix}{name}", nargs="*", action=_Refuse, help=argparse.SUPPRESS)


def config_fields(ns: argparse.Namespace, prefix: str, flags: Sequence[RouterFlag]) -> dict[str, Any]:
    """The ``GatewayConfig`` fields that ``flags``, prefixed ``--{prefix}``, gave; keyed by field name."""
    dest_prefix = prefix.replace("-", "_")
    given = vars(ns)
    return {f.field: given[dest_prefix + f.field] for f in flags if dest_prefix + f.field in given}


def available_policies() -> tuple[str, ...]:
    """The SMG policy names the routing package builds (``make_policy`` does not refuse them)."""
    from dataplane.routing import make_policy  # only once a parser is built: importing stays light

    built = []
    for name in SMG_POLICIES:
        try:
            make_policy(name)  # type: ignore[arg-type]  # names outside PolicyName are refused by it
        except (NotImplementedError, ValueError):
            continue
        built.append(name)
    return tuple(built)


def check_policy(policy: str | None) -> None:
    """Refuse an SMG policy we do not implement, naming the ones we do."""
    if policy is not None and policy not in (built := available_policies()):
        raise UnsupportedOption(f"policy {policy} is not supported yet; supported: {', '.join(built)}")


def _shown(value: object) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
