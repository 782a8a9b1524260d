"""Our gateway against the Rust SMG: same workers, same workload, same load generator, side by side.

Run (from the repository root; the script re-executes itself under ``.venv/bin/python``)::

    python bench/compare.py                       # all shapes, 15 s windows, 3 alternating repeats
    python bench/compare.py --shapes b --duration 10 --repeats 2
    python bench/compare.py --only ours --gateway-cmd ".venv/bin/python -m adapters.cli launch"

What runs
    Two reference workers (``python -m refworker --script filler --filler-tokens 4096 --tokens-per-chunk K
    --ttft-ms 0 --itl-ms 0 --loop uvloop``), started once per shape and shared by both gateways. For each
    repeat, each gateway in turn (order alternates: ours, smg / smg, ours / ...) is started fresh with the
    same flags (``launch --worker-urls grpc://W1 grpc://W2 --model-path DIR --policy round_robin --host
    127.0.0.1 --port P --log-level warn --prometheus-host 127.0.0.1 --prometheus-port Q``), waited
    for (``/readiness`` 200, then one non-streaming and one streaming request that must
    return exactly the expected text and token counts), loaded, then stopped. Only one gateway is up
    at a time. DIR is ``dataplane.embedded.embedded_model_dir()`` (Qwen3 tokenizer + config.json +
    generation_config.json); HF_HUB_OFFLINE=1. SMG is ``pip install smg==1.13.0`` in its own
    virtualenv, ``.bench/smg-venv``, created on first use.

Workload (bench/workload.py)
    ``POST /v1/chat/completions``: one fixed system + user message (138 prompt tokens with Qwen3's
    template), ``chat_template_kwargs: {"enable_thinking": false}``, ``max_tokens`` = N with
    ``ignore_eos: true``. Closed loop with C keep-alive connections: ``--warmup`` seconds of load, then a
    ``--duration`` window. Streaming shapes use bench/loadgen.py (one process, aiohttp on uvloop, SSE read
    incrementally, every event parsed); shape (a) uses wrk with a Lua response check (bench/wrkload.py;
    ~0.02 vs ~0.16 ms of client CPU per request, measured) when installed, else loadgen.py. Every response
    is validated (HTTP 200, finish_reason "length", usage.completion_tokens == N, the exact content length
    or text, [DONE]); errors are counted and printed loudly, and a target with errors cannot PASS.

    (a) non-streaming, N=64, C=32             (workers: 8 tokens per message; unused when not streaming)
    (b) streaming, N=256, 8 tokens per worker message, C=64, stream_options.include_usage
    (c) streaming, N=64, 1 token per worker message, C=1: TTFT (request sent -> first non-empty
        content delta) p50 / p90

Figures per gateway (median over repeats)
    req/s and output tokens/s; the gateway's CPU time (utime+stime+cutime+cstime over its process tree
    from /proc, sampled at the window's edges) per request and per output token -- on a shared 2-core
    box this is the fairest figure; peak RSS (VmHWM summed over the tree; max over windows); TTFT and
    latency percentiles; plus context: worker and load-generator CPU per request, SSE events and client
    socket reads per request, client connections opened, how busy the box was and how much CPU other
    processes (other people's tests) took during the window -- the box is shared, so read it.

Profiling our gateway's hot path: bench/profile_ours.py (py-spy).

Output: a plain-text table (``shape | metric | ours | smg | ours/smg``), the issue's targets with
PASS/FAIL, and ``.bench/compare-<timestamp>.json`` (+ ``.txt``); process logs in ``.bench/logs/<ts>/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import project_venv
from project_venv import ROOT

project_venv.enter(__file__)

import checks  # noqa: E402
import procs  # noqa: E402
import procstats  # noqa: E402
import report  # noqa: E402
import workload  # noqa: E402
import wrkload  # noqa: E402


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    title: str
    stream: bool
    max_tokens: int
    concurrency: int
    tokens_per_chunk: int


SHAPES = {
    "a": Shape("a", "non-stream 64 tok, c=32", False, 64, 32, 8),
    "b": Shape("b", "stream 256 tok (8/msg), c=64", True, 256, 64, 8),
    "c": Shape("c", "stream 64 tok (1/msg), c=1", True, 64, 1, 1),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/compare.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="a,b,c", help="comma-separated subset of a,b,c (default: a,b,c)")
    parser.add_argument(
        "--duration", type=float, default=15.0, help="measured seconds per window (default: 15)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of load before a window (default: 3)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="windows per gateway per shape (default: 3)")
    parser.add_argument("--only", choices=report.GATEWAYS, help="run one gateway only")
    parser.add_argument(
        "--unique-prompts",
        action="store_true",
        help="start every user message with 'Request NNNNNN. ' (a per-request counter, +9 prompt tokens) so "
        "no gateway can serve the user turn's tokenization from a cache; the system prompt stays shared",
    )
    parser.add_argument(
        "--client-a",
        choices=("wrk", "aiohttp"),
        default="wrk" if wrkload.available() else "aiohttp",
        help="load generator of shape (a): wrk (~8x cheaper per request; apt-get install wrk) or the "
        "aiohttp one used for (b) and (c) (default: wrk when installed, now %(default)s)",
    )
    parser.add_argument(
        "--gateway-cmd",
        default=f"{procs.VENV_PY} -m adapters.cli launch",
        help="our gateway's command; the common launch flags are appended (default: %(default)s)",
    )
    parser.add_argument(
        "--smg-cmd",
        default=None,
        help=f"SMG's command, flags appended (default: {procs.SMG_VENV}/bin/smg launch; made on first use)",
    )
    parser.add_argument(
        "--smg-version", default=procs.SMG_VERSION, help="smg version to install on first use"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout, seconds (default: 60)"
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / ".bench", help="where JSON, text and logs go")
    args = parser.parse_args()
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if unknown := [s for s in args.shapes if s not in SHAPES]:
        parser.error(f"unknown shape(s) {unknown}; choose from {sorted(SHAPES)}")
    if args.repeats < 1 or not 1 <= args.duration <= 3600 or not 0 <= args.warmup <= 600:
        parser.error("need --repeats >= 1, 1 <= --duration <= 3600, 0 <= --warmup <= 600")
    return args


# ---- one measured window -------------------------------------------------------------------------------


class Sampler:
    """CPU of the gateway, worker and client trees and of the whole box, at the edges of a window."""

    def __init__(self, gateway: procs.Proc, workers: list[procs.Proc]) -> None:
        self.roots = {"gateway": [gateway.pid], "workers": [w.pid for w in workers], "loadgen": []}
        self.before: dict[str, float] = {}

    def sample(self) -> dict[str, float]:
        cpu = {name: procstats.tree_cpu_seconds(pids) for name, pids in self.roots.items()}
        box = procstats.BoxCpu.read()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children: wrk
        reaped = usage.ru_utime + usage.ru_stime
        return {**cpu, "reaped": reaped, "box_busy": box.busy, "box_total": box.total, "t": time.time()}

    def start(self) -> None:
        self.before = self.sample()

    def stop(self, gateway: procs.Proc) -> dict[str, Any]:
        after = self.sample()
        delta = {k: after[k] - self.before[k] for k in after}
        return {
            "seconds": delta["t"],
            "gateway_cpu_s": delta["gateway"],
            "workers_cpu_s": delta["workers"],
            "loadgen_cpu_s": delta["loadgen"] + delta["reaped"],
            "box_busy_s": delta["box_busy"],
            "box_total_s": delta["box_total"],
            "peak_rss_mib": procstats.tree_peak_rss_mib(gateway.pid),
            "gateway_threads": procstats.tree_threads(gateway.pid),
        }


def measure_wrk(
    args: argparse.Namespace, shape: Shape, gateway: procs.Proc, base_url: str, model: str,
    workers: list[procs.Proc], expect: str, log: Path,
) -> dict[str, Any]:  # fmt: skip
    body = workload.chat_body(model, shape.max_tokens, False, args.unique_prompts)
    script = wrkload.write_script(
        log.with_suffix(".lua"), body, expect, shape.max_tokens, args.unique_prompts
    )
    wrkload.run_warmup(base_url, script, shape.concurrency, args.warmup, args.timeout)
    sampler = Sampler(gateway, workers)
    sampler.start()
    cmd = wrkload.command(base_url, script, shape.concurrency, round(args.duration), args.timeout)
    loader = procs.Proc("wrk", cmd, log)
    try:
        loader.popen.wait(timeout=args.duration + args.timeout + 30)
    finally:
        loader.stop()
    run = sampler.stop(gateway)
    run["load"] = wrkload.parse(loader.tail(40), shape.max_tokens)
    run["seconds"] = run["load"]["wrk_seconds"]  # rates over wrk's own clock; CPU is per request anyway
    return run


def measure(
    args: argparse.Namespace, shape: Shape, gateway: procs.Proc, base_url: str, model: str,
    workers: list[procs.Proc], expect: str, log: Path,
) -> dict[str, Any]:  # fmt: skip
    if not shape.stream and args.client_a == "wrk":
        return measure_wrk(args, shape, gateway, base_url, model, workers, expect, log)
    start_at = time.time() + 0.7 + args.warmup  # 0.7 s: the load generator's start-up
    end_at = start_at + args.duration
    cmd = [
        *procs.loadgen_cmd(), "--url", base_url, "--model", model, "--concurrency", str(shape.concurrency),
        "--start-at", f"{start_at:.3f}", "--end-at", f"{end_at:.3f}", "--max-tokens", str(shape.max_tokens),
        "--expect-chars", str(len(expect)), "--timeout", str(args.timeout),
        *(["--stream"] if shape.stream else []), *(["--unique-prompts"] if args.unique_prompts else []),
    ]  # fmt: skip
    loader = procs.Proc("loadgen", cmd, log)
    sampler = Sampler(gateway, workers)
    sampler.roots["loadgen"] = [loader.pid]
    time.sleep(max(0.0, start_at - time.time()))
    sampler.start()
    time.sleep(max(0.0, end_at - time.time()))
    run = sampler.stop(gateway)
    try:
        loader.popen.wait(timeout=args.timeout + 30)
    finally:
        loader.stop()
    lines = [line for line in loader.tail(5).splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"load generator failed:\n{loader.tail()}")
    run["load"] = json.loads(lines[-1])
    return run


def run_window(
    args: argparse.Namespace, shape: Shape, gw: str, cmd: list[str], worker_ports: list[int],
    workers: list[procs.Proc], model_dir: Path, model: str | None, expect: str, logs: Path, tag: str,
) -> tuple[dict[str, Any], str]:  # fmt: skip
    port = procs.free_port()
    flags = procs.gateway_flags(worker_ports, model_dir, port)
    commit = code_version()["commit"] if gw == "ours" else None  # the code is edited while we run
    gateway = procs.start_gateway(gw, cmd, [], flags, logs / f"{tag}-{gw}.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        ready_s = procs.wait_ready(gateway, base_url)
        if model is None:
            status, body = procs.http_json(base_url + "/v1/models")
            model = body["data"][0]["id"] if status == 200 and isinstance(body, dict) else "default"
        problems = checks.sample_check(base_url, model, shape.max_tokens, expect, args.unique_prompts)
        for problem in problems:
            print(f"  !!! {gw} sample check: {problem}", flush=True)
        run = measure(args, shape, gateway, base_url, model, workers, expect, logs / f"{tag}-{gw}-load.log")
        if not gateway.alive():
            problems.append(f"gateway exited during the window: {gateway.tail()}")
    finally:
        gateway.stop()
    run |= {
        "gateway": gw,
        "shape": shape.name,
        "ready_s": ready_s,
        "sample_problems": problems,
        "cmd": gateway.cmd,
        "commit": commit,
    }
    return run, model


def code_version() -> dict[str, Any]:
    """The commit under test and the gateway files changed on top of it (read-only git queries)."""

    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
        return out.stdout.strip()

    paths = ("dataplane", "adapters", "proto", "parsers", "refworker")
    dirty = git("status", "--porcelain", "--", *paths)
    diff = git("diff", "HEAD", "--", *paths)
    commit = git("log", "-1", "--format=%h %cI %s")[:100]
    if diff:
        commit += f" + uncommitted diff {hashlib.sha1(diff.encode()).hexdigest()[:8]}"
    return {"commit": commit, "uncommitted": dirty.splitlines()}


def describe(gw: str, shape: Shape, rep: int, metrics: dict[str, Any], run: dict[str, Any]) -> str:
    parts = [f"[{shape.name}] repeat {rep + 1} {gw:>4}: {metrics['req_s']:8.1f} req/s"]
    parts.append(f"{metrics['out_tok_s']:9.0f} tok/s")
    if metrics["gw_cpu_ms_per_req"] is not None:
        parts.append(
            f"gw CPU {metrics['gw_cpu_ms_per_req']:.3f} ms/req ({metrics['gw_cpu_cores']:.2f} cores)"
        )
    if metrics["ttft_p50_ms"] is not None:
        parts.append(f"TTFT p50 {metrics['ttft_p50_ms']:.2f} ms")
    parts.append(f"RSS {metrics['peak_rss_mib']:.0f} MiB, box {metrics['box_busy_pct']:.0f}% busy")
    parts.append(f"errors {metrics['errors']}")
    line = ", ".join(parts)
    load = run["load"]
    if metrics["errors"] or load["error_kinds"] or run["sample_problems"]:
        line += f"\n  !!! ERRORS {gw} ({shape.name}): {load['error_kinds']}"
        line += "".join(f"\n  !!!   {s}" for s in load["error_samples"])
    if load["warmup_ok"] == 0:
        line += f"\n  !!! {gw}: no request completed during warm-up"
    return line


# ---- the whole run -------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    from dataplane.embedded import embedded_model_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out_dir / "logs" / stamp
    model_dir = embedded_model_dir()
    gateways = [args.only] if args.only else list(report.GATEWAYS)
    commands = {"ours": shlex.split(args.gateway_cmd)}
    if "smg" in gateways:
        smg_cmd = args.smg_cmd or f"{procs.ensure_smg_venv(args.smg_version)} launch"
        commands["smg"] = shlex.split(smg_cmd)
    versions = (
        {"smg": procs.package_version(procs.SMG_VENV / "bin" / "python", "smg")} if "smg" in gateways else {}
    )
    print(
        f"model dir {model_dir}; gateways {gateways}; SMG {versions.get('smg', '-')}; "
        f"shape (a) client {args.client_a}; logs {logs}",
        flush=True,
    )

    windows: list[dict[str, Any]] = []
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    model: str | None = None
    for name in args.shapes:
        shape = SHAPES[name]
        expect = checks.expected_text(model_dir, shape.max_tokens)
        workers, ports = [], []
        try:
            for i in (1, 2):
                log = logs / f"{name}-worker{i}.log"
                proc, port = procs.start_worker(f"worker{i}", shape.tokens_per_chunk, log, model_dir)
                workers.append(proc)
                ports.append(port)
            per_gw: dict[str, list[dict[str, Any]]] = {gw: [] for gw in gateways}
            for rep in range(args.repeats):
                order = gateways if rep % 2 == 0 else gateways[::-1]
                for gw in order:
                    run, model = run_window(args, shape, gw, commands[gw], ports, workers, model_dir, model,
                                            expect, logs, f"{name}-r{rep + 1}")  # fmt: skip
                    metrics = report.window_metrics(run)
                    metrics["errors"] += len(run["sample_problems"])
                    print(describe(gw, shape, rep, metrics, run), flush=True)
                    load = {k: v for k, v in run.pop("load").items() if k not in ("latencies_ms", "ttfts_ms")}
                    windows.append({**run, "repeat": rep + 1, "load": load, "metrics": metrics})
                    per_gw[gw].append(metrics)
        finally:
            for worker in workers:
                worker.stop()
        summary[name] = {gw: report.median_metrics(ms) for gw, ms in per_gw.items()}

    titles = {k: s.title for k, s in SHAPES.items()}
    table = report.render(["shape", "metric", "ours", "smg", "ours/smg"], report.build_rows(summary, titles))
    verdicts = report.targets(summary)
    code = code_version()
    commits = sorted({w["commit"] for w in windows if w.get("commit")})
    if len(commits) > 1:
        print(
            "\n!!! the gateway's code changed during the run; windows ran on:\n!!!   "
            + "\n!!!   ".join(commits)
        )
    code["window_commits"] = commits
    text = "\n".join([
        "",
        f"code under test: {code['commit']} (+{len(code['uncommitted'])} uncommitted gateway files); "
        f"SMG {versions.get('smg', '-')}; shape (a) client: {args.client_a}",
        "prompt: " + ("unique per request (--unique-prompts)" if args.unique_prompts else
        "one fixed prompt -- a gateway that caches tokenization of repeated text pays ~nothing for it; "
        "--unique-prompts shows the uncached cost"),
        f"median of {args.repeats} alternating repeats, {args.duration:.0f} s windows "
        f"(+{args.warmup:.0f} s warm-up); CPU = gateway process tree, utime+stime from /proc",
        table,
        "",
        report.render_targets(verdicts),
    ])  # fmt: skip
    print(text, flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "timestamp": stamp, "argv": sys.argv[1:], "shapes": {k: asdict(SHAPES[k]) for k in args.shapes},
        "model": model, "model_dir": str(model_dir), "versions": versions, "commands": commands,
        "prompt": {"system": workload.SYSTEM, "user": workload.USER, "tokens": workload.PROMPT_TOKENS},
        "cpus": os.cpu_count(), "client_a": args.client_a, "unique_prompts": args.unique_prompts,
        "code": code,
    }  # fmt: skip
    out = args.out_dir / f"compare-{stamp}.json"
    procs.write_results(
        out, {"meta": meta, "summary": summary, "targets": verdicts, "windows": windows}, text, logs
    )
    bad = {f"({shape}) {gw}": m["errors"] for shape, by_gw in summary.items() for gw, m in by_gw.items()
           if m.get("errors")}  # fmt: skip
    if bad:
        print(
            f"\n!!! ERRORS (failed or wrong responses in measured windows): {bad} -- see the !!! lines above"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    procs.run_locked(main)
