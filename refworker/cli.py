"""``python -m refworker``: parse flags, serve until SIGTERM/SIGINT, print one ready line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from refworker import tracing
from refworker.config import (
    DISAGGREGATION_MODES,
    ENGINES,
    LOG_LEVELS,
    MODES,
    SCRIPT_NAMES,
    ConfigError,
    WorkerConfig,
)
from refworker.server import RefWorker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refworker", description="Reference engine simulator (SGLang, vLLM or TensorRT-LLM gRPC)"
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=31000, help="0 picks a free port (printed in the ready line)")
    add("--mode", choices=MODES, default="grpc")
    add("--engine", choices=ENGINES, default="sglang", help="whose gRPC service to serve (--mode grpc only)")
    add("--disaggregation-mode", choices=DISAGGREGATION_MODES, default="null", help="SGLang PD role")
    add("--disaggregation-bootstrap-port", type=int, default=8998, help="a prefill worker's (recorded)")
    add("--model-path", type=Path, default=None, help="tokenizer.json (+ configs); default: embedded Qwen3")
    add("--served-model-name", default="Qwen/Qwen3-0.6B")
    add("--reported-model-path", default=None, help="model_path GetModelInfo reports (default: --model-path)")
    add("--script", choices=SCRIPT_NAMES, default="fixed")
    add("--filler-tokens", type=int, default=256)
    add("--tokens-per-chunk", type=int, default=1)
    add("--random-chunking", action="store_true", help="chunk sizes 1..K, seeded per request")
    add("--ttft-ms", type=float, default=0.0)
    add("--itl-ms", type=float, default=0.0, help="per generated token")
    add("--prefill-ms-per-1k", type=float, default=0.0, help="extra TTFT per 1000 uncached prompt tokens")
    add("--eos-token-ids", type=int, nargs="+", default=None)
    add("--default-max-new-tokens", type=int, default=128)
    add("--log-level", choices=LOG_LEVELS, default="warning")
    add("--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="auto: uvloop when installed")
    add("--block-size", type=int, default=16, help="prefix cache block (page) size in tokens")
    add("--no-kv-events", dest="kv_events", action="store_false", help="SubscribeKvEvents -> UNIMPLEMENTED")
    add("--kv-event-history", type=int, default=4096, help="event batches kept for resuming subscribers")
    add("--otlp-traces-endpoint", default=None, help="export a span per request over OTLP/gRPC to it")
    realistic = parser.add_argument_group("realistic mode (continuous-batching simulator)")
    add = realistic.add_argument
    add("--realistic", action="store_true", help="simulate timing and a finite KV cache")
    add("--prefill-tps", type=float, default=8000.0, help="uncached prompt tokens prefilled per second")
    add("--prefill-chunk", type=int, default=2048, help="prompt tokens prefilled per scheduler step at most")
    add("--decode-base-ms", type=float, default=6.0, help="decode step time with an empty batch")
    add("--decode-per-req-ms", type=float, default=0.35, help="added decode step time per running sequence")
    add("--max-running", type=int, default=256, help="running requests at most; the rest queue")
    add("--kv-tokens", type=int, default=524288, help="KV cache capacity in tokens")
    return parser


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(
        host=args.host,
        port=args.port,
        mode=args.mode,
        engine=args.engine,
        disaggregation_mode=args.disaggregation_mode,
        disaggregation_bootstrap_port=args.disaggregation_bootstrap_port,
        model_path=args.model_path,
        served_model_name=args.served_model_name,
        reported_model_path=args.reported_model_path,
        script=args.script,
        filler_tokens=args.filler_tokens,
        tokens_per_chunk=args.tokens_per_chunk,
        random_chunking=args.random_chunking,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        prefill_ms_per_1k=args.prefill_ms_per_1k,
        eos_token_ids=tuple(args.eos_token_ids) if args.eos_token_ids else None,
        default_max_new_tokens=args.default_max_new_tokens,
        log_level=args.log_level,
        realistic=args.realistic,
        prefill_tps=args.prefill_tps,
        prefill_chunk=args.prefill_chunk,
        decode_base_ms=args.decode_base_ms,
        decode_per_req_ms=args.decode_per_req_ms,
        max_running=args.max_running,
        kv_tokens=args.kv_tokens,
        block_size=args.block_size,
        kv_events=args.kv_events,
        kv_event_history=args.kv_event_history,
    )


async def serve(config: WorkerConfig) -> None:
    worker = RefWorker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = await worker.start()
    print(f"refworker ready on {config.host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await worker.stop()
        tracing.shutdown()  # flushes the last spans


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed") from None
        else:
            # grpc.aio on uvloop costs about a third less CPU per streamed message.
            uvloop.run(main)
            return
    asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode == "http" and args.engine != "sglang":
        parser.error(f"--engine {args.engine} serves gRPC: it cannot be combined with --mode http")
    level = "WARNING" if args.log_level == "warn" else args.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
        if args.otlp_traces_endpoint:
            tracing.configure(args.otlp_traces_endpoint)
        _run(serve(config), args.loop)
    except ConfigError as exc:
        print(f"refworker: {exc}", file=sys.stderr)
        return 2
    return 0
