"""What ``smg serve`` runs: the validated plan, and pure builders of each worker's command, env and URL.

The commands are the ones SMG runs (``python -m sglang.launch_server …``), with ``python`` being this
interpreter, so that whatever engine is installed next to the gateway is the one that runs.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, assert_never

from dataplane.config import ConnectionMode, GatewayConfig
from dataplane.errors import ConfigError

Backend = Literal["reference", "sglang", "vllm", "trtllm"]
BACKENDS: tuple[Backend, ...] = ("reference", "sglang", "vllm", "trtllm")

# Every spelling of tensor-parallel size that SGLang, vLLM or TRT-LLM accept; it decides how many GPUs
# each data-parallel rank gets.
_TP_FLAGS = ("--tp-size", "--tensor-parallel-size", "--tp_size", "--tensor_parallel_size", "-tp")
# Engines that report prompt-token details in HTTP mode only when asked to.
_USAGE_DETAILS_FLAG: Mapping[Backend, str] = {
    "sglang": "--enable-cache-report",
    "vllm": "--enable-prompt-tokens-details",
}


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What to run on every data-parallel rank; only the host, port and GPUs differ between ranks."""

    backend: Backend
    mode: ConnectionMode
    model_path: str
    served_model_name: str | None = None
    extra_args: tuple[str, ...] = ()
    token_usage_details: bool = False

    def __post_init__(self) -> None:
        if self.backend == "trtllm" and self.mode != "grpc":
            raise ConfigError("the trtllm backend supports only --connection-mode grpc")
        if not self.model_path:
            raise ConfigError(f"--model-path is required for the {self.backend} backend")


@dataclass(frozen=True, slots=True)
class ServePlan:
    """Everything ``smg serve`` needs, validated before any process starts."""

    engine: EngineSpec
    data_parallel_size: int
    worker_host: str
    worker_base_port: int
    startup_timeout: float
    # The gateway's configuration; its worker URLs are placeholders until the ports are known.
    gateway: GatewayConfig

    def __post_init__(self) -> None:
        if self.data_parallel_size < 1:
            raise ConfigError("--data-parallel-size must be at least 1")
        if not 0 < self.worker_base_port < 65536:
            raise ConfigError(f"--worker-base-port {self.worker_base_port} out of range")
        if self.startup_timeout <= 0:
            raise ConfigError("--worker-startup-timeout must be positive")


def engine_command(spec: EngineSpec, host: str, port: int) -> list[str]:
    """The full argv of one worker listening on ``host:port``; pass-through args come last."""
    py = sys.executable
    where = ["--host", host, "--port", str(port)]
    grpc = spec.mode == "grpc"
    extra = list(spec.extra_args)
    match spec.backend:
        case "sglang":
            cmd = [py, "-m", "sglang.launch_server", "--model-path", spec.model_path, *where]
            cmd += ["--grpc-mode"] if grpc else []
        case "vllm":
            module = "vllm.entrypoints.grpc_server" if grpc else "vllm.entrypoints.openai.api_server"
            cmd = [py, "-m", module, "--model", spec.model_path, *where]
        case "trtllm":
            cmd = [py, "-m", "tensorrt_llm.commands.serve", spec.model_path, "--grpc", *where]
            extra = [_underscored(arg) for arg in extra]
        case "reference":
            cmd = [py, "-m", "refworker", "--model-path", spec.model_path]
            if flag_value(extra, ("--served-model-name",)) is None:
                cmd += ["--served-model-name", spec.served_model_name or spec.model_path]
            cmd += where if grpc else [*where, "--mode", "http"]
        case _:
            assert_never(spec.backend)
    usage_flag = _USAGE_DETAILS_FLAG.get(spec.backend)
    if spec.token_usage_details and not grpc and usage_flag:
        cmd.append(usage_flag)
    return cmd + extra


def engine_env(spec: EngineSpec, rank: int, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of data-parallel ``rank``: its own GPUs, unbuffered output for live logs."""
    env = dict(base)
    env["PYTHONUNBUFFERED"] = "1"
    if spec.backend != "reference":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(rank_gpus(rank, tp_size(spec.extra_args), base))
    return env


def rank_gpus(rank: int, tp: int, base: Mapping[str, str]) -> list[str]:
    """GPUs ``rank*tp … rank*tp+tp-1``, indexed into an inherited ``CUDA_VISIBLE_DEVICES`` if one is set."""
    first = rank * tp
    pool = [gpu.strip() for gpu in base.get("CUDA_VISIBLE_DEVICES", "").split(",") if gpu.strip()]
    if not pool:
        return [str(gpu) for gpu in range(first, first + tp)]
    if first + tp > len(pool):
        raise ConfigError(
            f"CUDA_VISIBLE_DEVICES lists {len(pool)} GPU(s) but data-parallel rank {rank} with "
            f"tensor-parallel size {tp} needs GPUs {first}..{first + tp - 1}"
        )
    return pool[first : first + tp]


def tp_size(args: Sequence[str]) -> int:
    """Tensor-parallel size from the pass-through engine args (1 when absent)."""
    raw = flag_value(args, _TP_FLAGS)
    if raw is None:
        return 1
    try:
        size = int(raw)
    except ValueError:
        raise ConfigError(f"tensor-parallel size must be an integer, got {raw!r}") from None
    if size < 1:
        raise ConfigError(f"tensor-parallel size must be at least 1, got {size}")
    return size


def flag_value(args: Sequence[str], names: Sequence[str]) -> str | None:
    """The last value given to any of ``names`` in ``args`` (``--flag value`` or ``--flag=value``)."""
    found: str | None = None
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if key not in names:
            continue
        if eq:
            found = value
        elif i + 1 < len(args):
            found = args[i + 1]
    return found


def worker_url(mode: ConnectionMode, host: str, port: int) -> str:
    """The URL the gateway dials; a wildcard bind address is reached over loopback."""
    host = connect_host(host)
    return f"{mode}://[{host}]:{port}" if ":" in host else f"{mode}://{host}:{port}"


def connect_host(host: str) -> str:
    """Where to connect to reach a server bound to ``host``."""
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    return wildcard.get(host, host)


def _underscored(arg: str) -> str:
    # TRT-LLM's click options are spelled with underscores; accept the SGLang/vLLM spelling too
    # (as SMG does), rewriting the option name only, never its value.
    if not arg.startswith("--"):
        return arg
    key, eq, value = arg.partition("=")
    return "--" + key[2:].replace("-", "_") + eq + value
