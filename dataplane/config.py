"""Frozen, validated gateway configuration, built once by the entrypoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from dataplane.errors import ConfigError

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
# The policies built so far; the rest of PolicyName is refused at start-up.
POLICIES: tuple[PolicyName, ...] = ("round_robin", "random")


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


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs to run; validated in ``__post_init__``."""

    worker_urls: tuple[WorkerUrl, ...]
    host: str = "0.0.0.0"
    port: int = 30000
    model_path: str | None = None
    tokenizer_path: str | None = None
    chat_template: str | None = None
    served_model_name: str | None = None
    policy: PolicyName = "round_robin"
    routing: PolicyConfig = PolicyConfig()
    request_timeout_secs: float = 1800.0
    max_payload_size: int = 512 * 1024 * 1024
    health_check_interval_secs: float = 60.0
    health_check_timeout_secs: float = 5.0
    health_failure_threshold: int = 3
    health_success_threshold: int = 2
    disable_health_check: bool = False
    request_id_headers: tuple[str, ...] = ("x-request-id", "x-correlation-id", "x-trace-id", "request-id")
    log_level: Literal["debug", "info", "warn", "error"] = "info"

    def __post_init__(self) -> None:
        if not self.worker_urls:
            raise ConfigError("at least one worker url is required (--worker-urls)")
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; supported: {', '.join(POLICIES)}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} out of range")
        for name in ("request_timeout_secs", "health_check_interval_secs", "health_check_timeout_secs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.health_failure_threshold < 1 or self.health_success_threshold < 1:
            raise ConfigError("health thresholds must be at least 1")
