"""Frozen, validated gateway configuration, built once by the entrypoint."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import urlsplit

from dataplane.errors import ConfigError
from parsers import REASONING_PARSER_NAMES, TOOL_PARSER_NAMES

PolicyName = Literal[
    "random",
    "round_robin",
    "power_of_two",
    "least_load",
    "cache_aware",
    "consistent_hashing",
    "prefix_hash",
    "manual",
]
AssignmentMode = Literal["random", "min_load", "min_group"]
ConnectionMode = Literal["grpc", "http"]
# Which engine service a gRPC worker serves; "auto": asked at registration (SGLang's, vLLM's, TRT-LLM's).
Runtime = Literal["auto", "sglang", "vllm", "trtllm"]
RUNTIMES: tuple[Runtime, ...] = ("auto", "sglang", "vllm", "trtllm")
# A worker's role: serving whole requests, or one half of prefill/decode disaggregation (PD).
WorkerType = Literal["regular", "prefill", "decode"]
WORKER_TYPES: tuple[WorkerType, ...] = ("regular", "prefill", "decode")
# SGLang's default bootstrap port of a prefill worker (``--disaggregation-bootstrap-port``).
DEFAULT_BOOTSTRAP_PORT = 8998
HistoryBackend = Literal["memory", "none", "postgres", "redis"]
HISTORY_BACKENDS: tuple[HistoryBackend, ...] = get_args(HistoryBackend)
TraceProtocol = Literal["grpc", "http/protobuf"]
TRACE_PROTOCOLS: tuple[TraceProtocol, ...] = get_args(TraceProtocol)
# Every policy name the gateway knows. Which of them are built is ``make_policy``'s answer (it raises
# for the others), so a policy becomes available the moment the routing package builds it.
POLICIES: tuple[PolicyName, ...] = get_args(PolicyName)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Policy knobs, named and defaulted as SMG's flags (smg-behavior.md §1.2, §3)."""

    cache_threshold: float = 0.3
    balance_abs_threshold: int = 64
    balance_rel_threshold: float = 1.5
    balance_token_usage_threshold: float = 1.0
    overload_token_usage_threshold: float = 1.0
    eviction_interval_secs: float = 120.0
    max_tree_size: int = 2**26
    block_size: int = 16
    prefix_token_count: int = 256
    prefix_hash_load_factor: float = 1.25
    least_load_kv_pressure_weight: float = 0.15
    least_load_default_throughput: float = 2000.0
    least_load_mean_prefill_tokens: int = 1024
    max_idle_secs: float = 14400.0
    assignment_mode: AssignmentMode = "random"

    def __post_init__(self) -> None:
        for name in ("cache_threshold", "balance_token_usage_threshold", "overload_token_usage_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be between 0 and 1")
        for name in ("max_tree_size", "block_size", "prefix_token_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in (
            "balance_rel_threshold",
            "eviction_interval_secs",
            "prefix_hash_load_factor",
            "least_load_default_throughput",
            "least_load_mean_prefill_tokens",
            "max_idle_secs",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.balance_abs_threshold < 0 or self.least_load_kv_pressure_weight < 0:
            raise ConfigError("balance_abs_threshold and least_load_kv_pressure_weight must not be negative")
        if self.assignment_mode not in get_args(AssignmentMode):
            raise ConfigError(f"assignment_mode must be one of {', '.join(get_args(AssignmentMode))}")


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """Where responses and conversations are stored: SMG's ``--history-backend`` and its backends' flags."""

    backend: HistoryBackend = "memory"
    postgres_db_url: str | None = field(default=None, repr=False)  # may hold a password
    postgres_pool_max_size: int = 16
    redis_url: str = field(default="redis://localhost:6379", repr=False)
    redis_pool_max_size: int = 16
    redis_retention_days: int = 30  # -1: keys never expire

    def __post_init__(self) -> None:
        if self.backend not in HISTORY_BACKENDS:
            raise ConfigError(
                f"unknown history backend {self.backend!r}; known: {', '.join(HISTORY_BACKENDS)}"
            )
        if self.backend == "postgres" and not self.postgres_db_url:
            raise ConfigError("history backend postgres needs --postgres-db-url (or POSTGRES_DB_URL)")
        if self.postgres_db_url and urlsplit(self.postgres_db_url).scheme not in ("postgres", "postgresql"):
            raise ConfigError("postgres_db_url must be a postgresql:// URL")
        if urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError("redis_url must be a redis://, rediss:// or unix:// URL")
        if self.postgres_pool_max_size < 1 or self.redis_pool_max_size < 1:
            raise ConfigError("history pool sizes must be at least 1")
        if self.redis_retention_days != -1 and self.redis_retention_days < 1:
            raise ConfigError("redis_retention_days must be at least 1, or -1 (keep forever)")


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry tracing: SMG's ``--enable-trace`` and ``--otlp-traces-endpoint``, plus the exporter's
    protocol and a parent-based sampling ratio. ``None``: the standard ``OTEL_*`` environment variable,
    else the default (resolved by the entrypoint, which alone configures the SDK)."""

    enabled: bool = False
    endpoint: str | None = None
    protocol: TraceProtocol | None = None
    sampling_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.protocol is not None and self.protocol not in TRACE_PROTOCOLS:
            raise ConfigError(f"unknown OTLP protocol {self.protocol!r}; known: {', '.join(TRACE_PROTOCOLS)}")
        if self.sampling_ratio is not None and not 0 <= self.sampling_ratio <= 1:
            raise ConfigError("trace sampling ratio must be between 0 and 1")
        if self.endpoint is not None and not self.endpoint.strip():
            raise ConfigError("the OTLP traces endpoint must not be empty")


@dataclass(frozen=True, slots=True)
class WorkerUrl:
    """A worker address; the scheme picks the connection mode (``grpc://`` or ``http://``)."""

    url: str
    mode: ConnectionMode
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> WorkerUrl:
        parts = urlsplit(url if "://" in url else f"grpc://{url}")
        schemes: dict[str, ConnectionMode] = {"grpc": "grpc", "http": "http", "https": "http"}
        mode = schemes.get(parts.scheme)
        if mode is None:
            raise ConfigError(f"worker url {url!r}: scheme must be grpc://, http:// or https://")
        if not parts.hostname or parts.port is None:
            raise ConfigError(f"worker url {url!r}: host and port are required")
        return cls(url=url, mode=mode, host=parts.hostname, port=parts.port)

    @property
    def canonical(self) -> str:
        """The address with the scheme spelled out and no trailing slash: two spellings, one worker."""
        parts = urlsplit(self.url if "://" in self.url else f"grpc://{self.url}")
        return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"

    @property
    def worker_id(self) -> str:
        """The worker's id in the admin API: URL-safe, and the same for the same address in every
        gateway process and across restarts (16 hex digits of the SHA-256 of ``canonical``)."""
        return hashlib.sha256(self.canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """A worker to add: its address, the labels it is listed with, and a key to send it (write-only)."""

    url: WorkerUrl
    labels: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    runtime: Runtime = "auto"  # gRPC workers only
    worker_type: WorkerType = "regular"
    bootstrap_port: int | None = None  # a prefill worker's; None: SGLang's default


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs to run; validated in ``__post_init__``."""

    worker_urls: tuple[WorkerUrl, ...]
    runtime: Runtime = "auto"  # the engine service of the command line's gRPC workers (--backend)
    # PD disaggregation (--pd-disaggregation): prefill workers with their bootstrap ports, decode workers.
    pd_disaggregation: bool = False
    prefill: tuple[tuple[WorkerUrl, int | None], ...] = ()
    decode: tuple[WorkerUrl, ...] = ()
    prefill_policy: PolicyName | None = None  # None: --policy picks the prefill worker too
    decode_policy: PolicyName | None = None
    host: str = "0.0.0.0"
    port: int = 30000
    model_path: str | None = None
    tokenizer_path: str | None = None
    chat_template: str | None = None
    served_model_name: str | None = None
    policy: PolicyName = "cache_aware"
    routing: PolicyConfig = PolicyConfig()
    history: HistoryConfig = HistoryConfig()
    tracing: TracingConfig = TracingConfig()
    request_timeout_secs: float = 1800.0
    max_payload_size: int = 512 * 1024 * 1024
    health_check_interval_secs: float = 60.0
    health_check_timeout_secs: float = 5.0
    health_check_endpoint: str = "/health"  # the path probed on HTTP workers (gRPC ones: HealthCheck)
    health_failure_threshold: int = 3
    health_success_threshold: int = 2
    disable_health_check: bool = False
    remove_unhealthy_workers: bool = False
    retry_max_retries: int = 5  # total attempts, as in SMG
    retry_initial_backoff_ms: float = 50.0
    retry_max_backoff_ms: float = 30000.0
    retry_backoff_multiplier: float = 1.5
    retry_jitter_factor: float = 0.2
    disable_retries: bool = False
    cb_failure_threshold: int = 10
    cb_success_threshold: int = 3
    cb_timeout_duration_secs: float = 60.0
    cb_window_duration_secs: float = 120.0  # accepted and unused, as in SMG
    disable_circuit_breaker: bool = False
    load_monitor_interval: float = 10.0
    routing_key_override: bool = False
    request_id_headers: tuple[str, ...] = ("x-request-id", "x-correlation-id", "x-trace-id", "request-id")
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    log_json: bool = False  # one JSON object per line
    log_dir: str | None = None  # also write the log to smg.log there (rotated daily)
    log_prompts: bool = False  # prompt and completion texts in the log (never otherwise)
    # Prometheus /metrics on a listener of its own; host None: the unspecified address of --host's family.
    prometheus_host: str | None = None
    prometheus_port: int = 29000
    prometheus_duration_buckets: tuple[float, ...] = (
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 45, 60, 90, 120, 180, 240,
        300, 480, 900, 1200, 1800, 2700, 3600, 5400, 7200,
    )  # fmt: skip
    # Parsers for every model; None: each model's by its name (parsers' tables), "passthrough": none.
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    # The gateway's own gRPC API (smg.gateway.v1: tokenize, detokenize, ...); None: not served.
    grpc_port: int | None = None
    # SMG's --tokenizer-cache-* flags; both layers default to on here (dataplane/tokenizer_cache.py).
    tokenizer_cache_enable_l0: bool = True
    tokenizer_cache_l0_max_entries: int = 10_000
    tokenizer_cache_l0_max_memory: int = 256 * 1024 * 1024
    tokenizer_cache_enable_l1: bool = True
    tokenizer_cache_l1_max_memory: int = 50 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.pd_disaggregation:
            self._check_pd()
        elif self.prefill or self.decode:
            raise ConfigError("--prefill and --decode need --pd-disaggregation")
        elif not self.worker_urls:
            raise ConfigError("at least one worker url is required (--worker-urls)")
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; known: {', '.join(POLICIES)}")
        self._check_role_policies()
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} out of range")
        if not self.health_check_endpoint.startswith("/"):
            raise ConfigError(f"--health-check-endpoint {self.health_check_endpoint!r} must be a path: /…")
        for kind, name, known in (
            ("tool_call_parser", self.tool_call_parser, TOOL_PARSER_NAMES),
            ("reasoning_parser", self.reasoning_parser, REASONING_PARSER_NAMES),
        ):
            if name is not None and name not in known:
                raise ConfigError(f"unknown {kind} {name!r}; known: {', '.join(known)}")
        if self.grpc_port is not None and not 0 <= self.grpc_port < 65536:
            raise ConfigError(f"grpc_port {self.grpc_port} out of range")
        if not 0 <= self.prometheus_port < 65536:
            raise ConfigError(f"prometheus_port {self.prometheus_port} out of range")
        buckets = self.prometheus_duration_buckets
        if not buckets or any(b <= 0 for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise ConfigError("prometheus_duration_buckets must be positive and strictly increasing")
        for name in (
            "tokenizer_cache_l0_max_entries",
            "tokenizer_cache_l0_max_memory",
            "tokenizer_cache_l1_max_memory",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in (
            "request_timeout_secs",
            "health_check_interval_secs",
            "health_check_timeout_secs",
            "cb_timeout_duration_secs",
            "cb_window_duration_secs",
            "load_monitor_interval",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.health_failure_threshold < 1 or self.health_success_threshold < 1:
            raise ConfigError("health thresholds must be at least 1")
        if self.cb_failure_threshold < 1 or self.cb_success_threshold < 1:
            raise ConfigError("circuit breaker thresholds must be at least 1")
        if self.retry_max_retries < 1:
            raise ConfigError("retry_max_retries (total attempts) must be at least 1")
        if not 0 <= self.retry_initial_backoff_ms <= self.retry_max_backoff_ms:
            raise ConfigError("retry backoffs must satisfy 0 <= initial <= max")
        if self.retry_backoff_multiplier < 1:
            raise ConfigError("retry_backoff_multiplier must be at least 1")
        if not 0 <= self.retry_jitter_factor <= 1:
            raise ConfigError("retry_jitter_factor must be between 0 and 1")

    def _check_role_policies(self) -> None:
        roles = (("--prefill-policy", self.prefill_policy), ("--decode-policy", self.decode_policy))
        for flag, name in roles:
            if name is None:
                continue
            if not self.pd_disaggregation:
                raise ConfigError(f"{flag} needs --pd-disaggregation")
            if name not in POLICIES:
                raise ConfigError(f"unknown policy {name!r} for {flag}; known: {', '.join(POLICIES)}")

    def _check_pd(self) -> None:
        if not self.prefill or not self.decode:
            raise ConfigError("--pd-disaggregation needs at least one --prefill and one --decode worker")
        if self.worker_urls:
            raise ConfigError("--worker-urls cannot be combined with --pd-disaggregation")
        if len({url.mode for url in (*(url for url, _ in self.prefill), *self.decode)}) > 1:
            raise ConfigError("PD disaggregation needs its workers all grpc:// or all http(s)://")
        if self.runtime not in ("auto", "sglang", "vllm"):
            raise ConfigError(
                f"PD disaggregation is not supported yet for {self.runtime} workers (SGLang only)"
            )

    def worker_specs(self) -> list[WorkerSpec]:
        """The command line's workers: the regular ones, or the prefill and decode ones."""
        specs = [WorkerSpec(url, runtime=self.runtime) for url in self.worker_urls]
        specs += [
            WorkerSpec(url, runtime=self.runtime, worker_type="prefill", bootstrap_port=port)
            for url, port in self.prefill
        ]
        return specs + [WorkerSpec(url, runtime=self.runtime, worker_type="decode") for url in self.decode]
