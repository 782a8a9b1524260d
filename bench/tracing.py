"""What tracing costs: our gateway's throughput with tracing off, on at sampling 1.0 and on at 0.1.

Run (from the repository root; the script re-executes itself under ``.venv/bin/python``)::

    python bench/tracing.py            # streaming + non-streaming, 8 s windows, 4 repeats (~5 min)
    python bench/tracing.py --shapes stream --duration 10 --repeats 3
    python bench/tracing.py --protocol http/protobuf   # spans over OTLP/HTTP instead of OTLP/gRPC

What runs
    Two reference workers (as in bench/compare.py: filler script, delays 0, 8 tokens per worker message,
    uvloop; they do not trace themselves, so the figures are the gateway's cost) and a real OTLP collector,
    ``rotel`` (PyPI package ``rotel``, a dev dependency), receiving the gateway's spans over OTLP/gRPC and
    dropping them after decoding (its ``blackhole`` exporter). For every window a fresh gateway is started
    with the same launch flags as compare.py plus, when tracing, ``--enable-trace --otlp-traces-endpoint
    <rotel> --trace-sampling-ratio R``. Configurations
    alternate within each repeat (off, 1.0, 0.1 / 0.1, 1.0, off / ...), each window after a sample check
    (exact text and token counts, streaming and not) and ``--warmup`` seconds of load.

Workload (bench/workload.py): the 138-token chat prompt, 64 output tokens, ``ignore_eos``, closed loop with
32 connections (bench/loadgen.py); ``stream`` with ``stream_options.include_usage``, and ``non-stream``.

Figures (medians over repeats): req/s; "vs off", the median of each repeat's ratio to the tracing-off
window of the same repeat (windows side by side; the verdict is on this one), and "(of medians)", the
ratio of the medians, which pairs windows minutes apart; the gateway's CPU per request (utime+stime from
/proc). Target: sampling 1.0 costs under 15 % of throughput. Output: the table, and
``.bench/tracing-<timestamp>.json`` (+ ``.txt``); process logs in ``.bench/logs/tracing-<timestamp>/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import project_venv
from project_venv import ROOT

project_venv.enter(__file__)

import checks  # noqa: E402
import procs  # noqa: E402
import procstats  # noqa: E402
import report  # noqa: E402

MAX_TOKENS = 64
CONCURRENCY = 32
TOKENS_PER_CHUNK = 8
CONFIGS: dict[str, float | None] = {"off": None, "on, sampling 1.0": 1.0, "on, sampling 0.1": 0.1}
TARGET = 0.15  # sampling 1.0 may cost at most this fraction of throughput


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/tracing.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="stream,non-stream", help="stream, non-stream or both")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before a window")
    parser.add_argument("--repeats", type=int, default=4, help="windows per configuration and shape")
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http/protobuf"], help="OTLP protocol")
    parser.add_argument("--out-dir", type=Path, default=ROOT / ".bench", help="where JSON, text and logs go")
    args = parser.parse_args()
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not set(args.shapes) <= {"stream", "non-stream"} or args.repeats < 1:
        parser.error("--shapes: stream and/or non-stream; --repeats >= 1")
    return args


def start_rotel(logs: Path) -> tuple[procs.Proc, int, int]:
    """rotel's collector on free ports, decoding every span and dropping it; with its OTLP/gRPC and
    OTLP/HTTP ports."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        raise SystemExit("rotel is not installed: .venv/bin/pip install -e '.[dev]'")
    grpc_port, http_port = procs.free_port(), procs.free_port()
    cmd = [
        str(Path(spec.origin).parent / "rotel-agent"), "start", "--exporter", "blackhole",
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}", "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
        "--pid-file", str(logs / "rotel.pid"), "--log-file", str(logs / "rotel-agent.log"),
    ]  # fmt: skip
    proc = procs.Proc("rotel", cmd, logs / "rotel.log")
    deadline = time.time() + 30
    while time.time() < deadline:
        if all(_accepts(port) for port in (grpc_port, http_port)):
            return proc, grpc_port, http_port
        if not proc.alive():
            break
        time.sleep(0.1)
    raise RuntimeError(f"rotel did not start:\n{proc.tail()}")


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_window(
    args: argparse.Namespace, stream: bool, ratio: float | None, ports: list[int], model_dir: Path,
    collector: int, expect: str, logs: Path, tag: str,
) -> dict[str, Any]:  # fmt: skip
    port = procs.free_port()
    flags = procs.gateway_flags(ports, model_dir, port)  # with /metrics on a free port
    if ratio is not None:
        flags += ["--enable-trace", "--otlp-traces-endpoint", f"127.0.0.1:{collector}"]
        flags += ["--otlp-traces-protocol", args.protocol, "--trace-sampling-ratio", str(ratio)]
    base_cmd = [str(procs.VENV_PY), "-m", "adapters.cli", "launch"]
    gateway = procs.start_gateway("gateway", base_cmd, [], flags, logs / f"{tag}-gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_ready(gateway, url)
        status, body = procs.http_json(url + "/v1/models")
        model = body["data"][0]["id"] if status == 200 and isinstance(body, dict) else "default"
        problems = checks.sample_check(url, model, MAX_TOKENS, expect)
        start_at = time.time() + 0.7 + args.warmup
        end_at = start_at + args.duration
        cmd = [
            *procs.loadgen_cmd(), "--url", url, "--model", model, "--concurrency", str(CONCURRENCY),
            "--start-at", f"{start_at:.3f}", "--end-at", f"{end_at:.3f}", "--max-tokens", str(MAX_TOKENS),
            "--expect-chars", str(len(expect)), *(["--stream"] if stream else []),
        ]  # fmt: skip
        loader = procs.Proc("loadgen", cmd, logs / f"{tag}-load.log")
        time.sleep(max(0.0, start_at - time.time()))
        cpu_before = procstats.tree_cpu_seconds([gateway.pid])
        time.sleep(max(0.0, end_at - time.time()))
        cpu = procstats.tree_cpu_seconds([gateway.pid]) - cpu_before
        try:
            loader.popen.wait(timeout=90)
        finally:
            loader.stop()
        lines = [line for line in loader.tail(5).splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"load generator failed:\n{loader.tail()}")
        load = json.loads(lines[-1])
    finally:
        gateway.stop()
    ok = load["ok"]
    return {
        "req_s": ok / args.duration,
        "gw_cpu_ms_per_req": cpu / ok * 1e3 if ok else None,
        "gw_cpu_cores": cpu / args.duration,
        "ttft_p50_ms": report.percentile(load["ttfts_ms"], 50),
        "errors": load["errors"] + len(problems),
        "error_samples": load["error_samples"] + problems,
    }


def median(windows: list[dict[str, Any]], key: str) -> float | None:
    values = [w[key] for w in windows if w[key] is not None]
    return statistics.median(values) if values else None


def main() -> int:
    args = parse_args()
    from dataplane.embedded import embedded_model_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out_dir / "logs" / f"tracing-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    model_dir = embedded_model_dir()
    expect = checks.expected_text(model_dir, MAX_TOKENS)
    rotel, grpc_port, http_port = start_rotel(logs)
    collector = http_port if args.protocol == "http/protobuf" else grpc_port
    workers = [
        procs.start_worker(f"worker{i}", TOKENS_PER_CHUNK, logs / f"worker{i}.log", model_dir) for i in (1, 2)
    ]
    ports = [port for _, port in workers]
    print(f"model dir {model_dir}; rotel on :{collector}; logs {logs}", flush=True)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for shape in args.shapes:
            results[shape] = {name: [] for name in CONFIGS}
            for rep in range(args.repeats):
                order = list(CONFIGS) if rep % 2 == 0 else list(CONFIGS)[::-1]
                for name in order:
                    tag = f"{shape}-r{rep + 1}-{name.replace(', ', '-').replace(' ', '')}"
                    run = run_window(args, shape == "stream", CONFIGS[name], ports, model_dir, collector,
                                     expect, logs, tag)  # fmt: skip
                    results[shape][name].append(run)
                    line = f"[{shape}] repeat {rep + 1} {name:>17}: {run['req_s']:7.1f} req/s"
                    if run["gw_cpu_ms_per_req"] is not None:
                        cpu = f"{run['gw_cpu_ms_per_req']:.3f} ms/req ({run['gw_cpu_cores']:.2f} cores)"
                        line += f", gw CPU {cpu}"
                    if run["errors"]:
                        line += f"\n  !!! {run['errors']} errors: {run['error_samples'][:3]}"
                    print(line, flush=True)
    finally:
        for proc, _ in workers:
            proc.stop()
        rotel.stop()
    rows, verdicts, errors = [], [], 0
    for shape, by_config in results.items():
        base = median(by_config["off"], "req_s")
        for name, windows in by_config.items():
            req_s, cpu_ms = median(windows, "req_s"), median(windows, "gw_cpu_ms_per_req")
            errors += sum(w["errors"] for w in windows)
            # Each repeat's windows ran side by side, so a repeat's ratio is taken within the repeat: the
            # box drifts by several points over a run, and a ratio of medians would pair windows minutes
            # apart. Both are shown; the verdict is on the paired one.
            paired = [on["req_s"] / off["req_s"] for on, off in zip(windows, by_config["off"], strict=True)]
            ratio = statistics.median(paired) if all(paired) else None
            of_medians = req_s / base if req_s is not None and base else None
            rows.append([
                shape, name, f"{req_s:,.0f}" if req_s else "-", f"{ratio:.3f}" if ratio else "-",
                f"{of_medians:.3f}" if of_medians else "-", f"{cpu_ms:.3f}" if cpu_ms else "-",
            ])  # fmt: skip
            if name == "on, sampling 1.0" and ratio is not None:
                verdict = "PASS" if 1 - ratio < TARGET else "FAIL"
                verdicts.append(
                    f"{shape}: sampling 1.0 costs {1 - ratio:.1%} of throughput (target < {TARGET:.0%}): "
                    f"{verdict}; per repeat {', '.join(f'{r:.3f}' for r in paired)}"
                )
    columns = ["shape", "tracing", "req/s", "vs off", "(of medians)", "gw CPU ms/req"]
    table = report.render(columns, rows)
    text = "\n".join([
        "",
        f"chat, {MAX_TOKENS} output tokens ({TOKENS_PER_CHUNK}/worker message), 138-token prompt, "
        f"c={CONCURRENCY}; medians of {args.repeats} alternating repeats, {args.duration:.0f} s windows "
        f"(+{args.warmup:.0f} s warm-up); spans to rotel over OTLP {args.protocol}",
        table,
        "",
        *verdicts,
    ])  # fmt: skip
    print(text, flush=True)
    out = args.out_dir / f"tracing-{stamp}.json"
    procs.write_results(
        out, {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, text, logs
    )
    if errors:
        print(f"\n!!! {errors} failed or wrong responses in measured windows")
    return 1 if errors else 0


if __name__ == "__main__":
    procs.run_locked(main)
