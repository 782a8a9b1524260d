"""Tokenization served by the gateway, ours against the Rust SMG's ``/v1/tokenize`` on the same inputs.

Run (from the repository root; re-executes itself under ``.venv/bin/python``)::

    python bench/tokenization.py                    # every workload, 8 s windows, 2 repeats
    python bench/tokenization.py --only ours --workloads A,D

(Not ``bench/tokenize.py``: with ``bench/`` first on ``sys.path``, as it is for every script here, that
name would shadow the standard library's ``tokenize``, which ``inspect`` and so ``dataclasses`` import.)

What runs
    One reference worker (the embedded Qwen3 model directory); for every window a gateway started fresh
    with ``launch --worker-urls grpc://W --model-path DIR --policy round_robin --host 127.0.0.1 --port P``:
    ``ours`` (caches on, its default; ``--grpc-port Q``), ``ours-off`` (``--no-tokenizer-cache-enable-l0
    --no-tokenizer-cache-enable-l1``), ``smg`` (``--tokenizer-cache-enable-l0
    --tokenizer-cache-enable-l1``: SMG 1.13 with both caches on) and ``smg-off`` (SMG's CLI default:
    both off). The box has 2 cores, shared with the client: CPU per request of the gateway process tree
    (utime+stime from /proc) is the fairest figure.

Workloads
    A  HTTP, one fixed prompt (the compare benchmark's chat prompt rendered with Qwen3's template: 138
       tokens), wrk with 32 connections; every response checked for ``"count":138`` in Lua.
    B  HTTP, unique prompts: the same with "Request NNNNNN. " in the user turn (147 tokens), a
       per-request counter, so no whole-input cache can answer.
    C  gRPC (ours only: SMG has no such API): A's and B's prompts through ``smg.gateway.v1.Tokenizer``
       from a grpclib client (32 in flight over 4 connections); the Python client costs as much CPU as
       the gateway, so read the gateway's CPU per request.
    D  Multi-turn conversations: K conversations of T turns (a shared ~600-token system prompt, user turns
       of 40-120 words, assistant turns of 80-250 words); request t of a conversation is the prompt of
       its turn t (the conversation so far, rendered with the chat template) as ``prompt``, sent turn by
       turn across conversations, each once, 8 in flight, from a fresh gateway; every count checked
       against the tokenizer. Caches on vs off gives the cache speedup. Ours also over gRPC.
    E  Event-loop health: small tokenize requests, one at a time on their own connection, while another
       connection keeps ~100k-token tokenizations (never cached) in flight; latency p50/p99/max, and a
       baseline with nothing big in flight.

Output: a table (``workload | metric | ours | smg | ours/smg``), the issue's two targets with PASS/FAIL,
and ``.bench/tokenize-<timestamp>.json`` (+ ``.txt``); process logs in ``.bench/logs/tokenize-<ts>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import project_venv
from project_venv import HERE, ROOT

project_venv.enter(__file__)

import procs  # noqa: E402
import procstats  # noqa: E402
import report  # noqa: E402
import workload  # noqa: E402

MODEL = "Qwen/Qwen3-0.6B"
VARIANTS = {
    "ours": ("ours", []),
    "ours-off": ("ours", ["--no-tokenizer-cache-enable-l0", "--no-tokenizer-cache-enable-l1"]),
    "smg": ("smg", ["--tokenizer-cache-enable-l0", "--tokenizer-cache-enable-l1"]),
    "smg-off": ("smg", []),
}
WORKLOADS = ("A", "B", "C", "D", "E")
TAG = "Request 000000. "  # B: its six digits become a per-request counter
_TEXT = (
    "gateway worker token stream latency cache prefix model request response router policy batch queue "
    "prompt template decode encode chunk server client health metric trace span retry backoff circuit "
    "breaker load balance shard replica memory budget eviction turn conversation system user assistant "
    "tool call argument schema json grammar sample temperature probability logit vocabulary merge byte "
    "unicode 你好 世界 模型 café naïve résumé 42 1337 2024 3.14 -- ; : , . ! ? ( ) [ ] { } \" '"
)
WORDS = _TEXT.split()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/tokenization.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="subset of A,B,C,D,E")
    parser.add_argument("--only", choices=("ours", "smg"), help="one gateway only")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before a window")
    parser.add_argument("--repeats", type=int, default=2, help="windows per variant (median)")
    parser.add_argument("--concurrency", type=int, default=32, help="A, B, C: requests in flight")
    parser.add_argument("--conversations", type=int, default=128, help="D: conversations")
    parser.add_argument("--turns", type=int, default=12, help="D: turns per conversation")
    parser.add_argument("--out-dir", type=Path, default=ROOT / ".bench")
    args = parser.parse_args()
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    if unknown := set(args.workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads {sorted(unknown)}")
    return args


# ---- inputs --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inputs:
    fixed: str  # A's prompt
    fixed_count: int
    unique: str  # B's prompt, its user turn starting with the tag "Request 000000. "
    unique_count: int
    turns: list[tuple[str, int]]  # D: (prompt, expected count), in sending order


def build_inputs(model_dir: Path, conversations: int, turns: int) -> Inputs:
    from dataplane.tokenizer import ModelTokenizer

    tok = ModelTokenizer.from_dir(model_dir)
    kwargs = {"enable_thinking": False}

    def render(messages: list[dict[str, str]]) -> str:
        return tok.render_chat(messages, template_kwargs=kwargs)

    fixed = render(
        [{"role": "system", "content": workload.SYSTEM}, {"role": "user", "content": workload.USER}]
    )
    unique = render(
        [{"role": "system", "content": workload.SYSTEM}, {"role": "user", "content": TAG + workload.USER}]
    )
    rng = random.Random(5)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    system = workload.SYSTEM + " " + words(450, 450)
    by_turn: list[list[str]] = [[] for _ in range(turns)]
    for _ in range(conversations):
        messages = [{"role": "system", "content": system}]
        for t in range(turns):
            messages.append({"role": "user", "content": words(40, 120) + "?"})
            by_turn[t].append(render(messages))
            messages.append({"role": "assistant", "content": words(80, 250) + "."})
    ordered = [text for turn in by_turn for text in turn]
    counts = [len(e.ids) for e in tok.tokenizer.encode_batch_fast(ordered, add_special_tokens=False)]
    return Inputs(
        fixed=fixed,
        fixed_count=len(tok.tokenizer.encode(fixed, add_special_tokens=False).ids),
        unique=unique,
        unique_count=len(tok.tokenizer.encode(unique, add_special_tokens=False).ids),
        turns=list(zip(ordered, counts, strict=True)),
    )


# ---- gateways ------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    proc: procs.Proc
    url: str
    grpc_port: int | None


def start(variant: str, worker_port: int, model_dir: Path, logs: Path, tag: str) -> Gateway:
    kind, extra = VARIANTS[variant]
    port = procs.free_port()
    flags = procs.gateway_flags([worker_port], model_dir, port)
    grpc_port = None
    if kind == "smg":
        base = [str(procs.ensure_smg_venv()), "launch"]
    else:
        base = [str(procs.VENV_PY), "-m", "adapters.cli", "launch"]
        grpc_port = procs.free_port()
        extra = [*extra, "--grpc-port", str(grpc_port)]
    proc = procs.start_gateway(variant, base, extra, flags, logs / f"{tag}-{variant}.log")
    url = f"http://127.0.0.1:{port}"
    procs.wait_ready(proc, url)
    return Gateway(proc, url, grpc_port)


def cpu_window(gateway: Gateway, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s result with the gateway tree's CPU seconds over it."""
    before = procstats.tree_cpu_seconds([gateway.proc.pid])
    result = run()
    result["gateway_cpu_s"] = procstats.tree_cpu_seconds([gateway.proc.pid]) - before
    result["peak_rss_mib"] = procstats.tree_peak_rss_mib(gateway.proc.pid)
    return result


def tokenload(args: list[str], log: Path, timeout: float) -> dict[str, Any]:
    cmd = [str(procs.VENV_PY), str(HERE / "tokenload.py"), *args]
    loader = procs.Proc("tokenload", cmd, log)
    try:
        loader.popen.wait(timeout=timeout)
    finally:
        loader.stop()
    lines = [line for line in loader.tail(5).splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"load generator failed:\n{loader.tail()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ---- A and B: wrk over HTTP ----------------------------------------------------------------------------

_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%(body)s]==]
local prefix, suffix, unique = [==[%(prefix)s]==], [==[%(suffix)s]==], %(unique)s
local expect = '"count":%(count)d'
local threads = {}
function setup(thread) thread:set("tid", #threads) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0; sample = ""; counter = tid * 200000 end
function request()
  if not unique then return wrk.format() end
  counter = counter + 1
  return wrk.format(nil, nil, nil, prefix .. string.format("%%06d", counter %% 1000000) .. suffix)
end
function response(status, headers, body)
  if status == 200 and string.find(body, expect, 1, true) then ok = ok + 1
  else bad = bad + 1; if sample == "" then sample = status .. " " .. string.sub(body, 1, 200) end end
end
function done(summary, latency, requests)
  local o, b, s = 0, 0, ""
  for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("bad")
    if s == "" then s = t:get("sample") end end
  io.write(string.format('BENCH_JSON {"ok":%%d,"bad":%%d,"seconds":%%f,"p50_us":%%d,"p99_us":%%d}\\n',
    o, b, summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
  io.write("BENCH_SAMPLE " .. s .. "\\n")
end
"""


def wrk_window(
    gateway: Gateway, inputs: Inputs, unique: bool, args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    prompt = inputs.unique if unique else inputs.fixed
    body = json.dumps({"model": MODEL, "prompt": prompt})
    start = body.index(TAG) + len("Request ") if unique else 0
    script = log.with_suffix(".lua")
    script.write_text(
        _LUA
        % {
            "body": body,
            "prefix": body[:start],
            "suffix": body[start + 6 :] if unique else "",
            "unique": "true" if unique else "false",
            "count": inputs.unique_count if unique else inputs.fixed_count,
        }
    )

    def wrk(seconds: float) -> dict[str, Any]:
        cmd = ["wrk", "-t2", f"-c{args.concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
               "-s", str(script), gateway.url + "/v1/tokenize"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False).stdout
        log.write_text(out)
        match = re.search(r"BENCH_JSON (\{.*\})", out)
        if match is None:
            raise RuntimeError(f"wrk failed:\n{out[-2000:]}")
        result: dict[str, Any] = json.loads(match.group(1))
        if result["bad"]:
            sample = re.search(r"BENCH_SAMPLE (.*)", out)
            result["error_samples"] = [sample.group(1) if sample else ""]
        return result

    wrk(args.warmup)
    result = cpu_window(gateway, lambda: wrk(args.duration))
    return {"req_s": result["ok"] / result["seconds"], "errors": result["bad"], **result}


# ---- the workloads ---------------------------------------------------------------------------------------


def run_a_b(name: str, variant: str, ctx: Context) -> dict[str, Any]:
    gateway = start(variant, ctx.worker_port, ctx.model_dir, ctx.logs, f"{name}-r{ctx.rep}")
    try:
        return wrk_window(
            gateway, ctx.inputs, name == "B", ctx.args, ctx.logs / f"{name}-r{ctx.rep}-{variant}-wrk.log"
        )
    finally:
        gateway.proc.stop()


def run_c(unique: bool, ctx: Context) -> dict[str, Any]:
    gateway = start("ours", ctx.worker_port, ctx.model_dir, ctx.logs, f"C-r{ctx.rep}")
    args = ctx.args
    try:
        assert gateway.grpc_port is not None
        start_at = time.time() + 1.0 + args.warmup
        end_at = start_at + args.duration
        text, count = (
            (ctx.inputs.unique, ctx.inputs.unique_count)
            if unique
            else (ctx.inputs.fixed, ctx.inputs.fixed_count)
        )
        load = [
            "rate", "--grpc", f"127.0.0.1:{gateway.grpc_port}", "--model", MODEL, "--text", text,
            "--count", str(count), "--concurrency", str(args.concurrency), "--channels", "4",
            "--start-at", f"{start_at:.3f}", "--end-at", f"{end_at:.3f}", *(["--unique"] if unique else []),
        ]  # fmt: skip
        cmd = [str(procs.VENV_PY), str(HERE / "tokenload.py"), *load]
        loader = procs.Proc(
            "tokenload", cmd, ctx.logs / f"C-r{ctx.rep}-{'unique' if unique else 'fixed'}.log"
        )
        time.sleep(max(0.0, start_at - time.time()))
        before = procstats.tree_cpu_seconds([gateway.proc.pid])
        time.sleep(max(0.0, end_at - time.time()))
        cpu = procstats.tree_cpu_seconds([gateway.proc.pid]) - before
        loader.popen.wait(timeout=60)
        lines = [line for line in loader.tail(5).splitlines() if line.startswith("{")]
        loader.stop()
        if not lines:
            raise RuntimeError(f"gRPC load failed:\n{loader.tail()}")
        result: dict[str, Any] = json.loads(lines[-1])
        return {"req_s": result["ok"] / result["seconds"], "gateway_cpu_s": cpu, **result}
    finally:
        gateway.proc.stop()


def run_d(variant: str, grpc: bool, ctx: Context) -> dict[str, Any]:
    gateway = start(variant, ctx.worker_port, ctx.model_dir, ctx.logs, f"D-r{ctx.rep}")
    try:
        requests = ctx.logs / "D-requests.jsonl"
        if not requests.exists():
            requests.write_text(
                "".join(
                    json.dumps({"model": MODEL, "prompt": p, "count": c}) + "\n" for p, c in ctx.inputs.turns
                )
            )
        target = ["--grpc", f"127.0.0.1:{gateway.grpc_port}"] if grpc else ["--url", gateway.url]
        load = ["list", *target, "--requests", str(requests), "--concurrency", "8"]
        log = ctx.logs / f"D-r{ctx.rep}-{variant}{'-grpc' if grpc else ''}.log"
        result = cpu_window(gateway, lambda: tokenload(load, log, timeout=900))
        return {
            "req_s": result["ok"] / result["seconds"],
            "tok_s": result["tokens"] / result["seconds"],
            **result,
        }
    finally:
        gateway.proc.stop()


def run_e(variant: str, ctx: Context) -> dict[str, Any]:
    gateway = start(variant, ctx.worker_port, ctx.model_dir, ctx.logs, f"E-r{ctx.rep}")
    try:
        out: dict[str, Any] = {}
        for label, extra in (("idle", ["--no-big"]), ("busy", [])):
            start_at = time.time() + 1.0
            end_at = start_at + ctx.args.duration
            load = ["probe", "--url", gateway.url, "--model", MODEL, "--start-at", f"{start_at:.3f}",
                    "--end-at", f"{end_at:.3f}", *extra]  # fmt: skip
            out[label] = tokenload(load, ctx.logs / f"E-r{ctx.rep}-{variant}-{label}.log", timeout=300)
        out["errors"] = out["idle"]["errors"] + out["busy"]["errors"]
        return out
    finally:
        gateway.proc.stop()


@dataclass
class Context:
    args: argparse.Namespace
    inputs: Inputs
    model_dir: Path
    worker_port: int
    logs: Path
    rep: int = 0


# ---- report --------------------------------------------------------------------------------------------


def med(runs: list[dict[str, Any]], key: str) -> float:
    values = [float(r[key]) for r in runs if key in r]
    return statistics.median(values) if values else float("nan")


def per_req_ms(runs: list[dict[str, Any]]) -> float:
    values = [r["gateway_cpu_s"] * 1000 / max(1, r["ok"]) for r in runs if "gateway_cpu_s" in r]
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def ratio(a: float, b: float) -> str:
    return "-" if a != a or b != b or not b else f"{a / b:.2f}x"


def render(rows: list[tuple[str, str, float, float, int]]) -> str:
    lines = [[w, m, fmt(o, d), fmt(s, d), ratio(o, s)] for w, m, o, s, d in rows]
    return report.table(["workload", "metric", "ours", "smg", "ours/smg"], lines)


# ---- main ----------------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    from dataplane.embedded import embedded_model_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out_dir / "logs" / f"tokenize-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    model_dir = embedded_model_dir()
    inputs = build_inputs(model_dir, args.conversations, args.turns)
    gateways = [args.only] if args.only else ["ours", "smg"]
    d_tokens = sum(c for _, c in inputs.turns)
    sizes = f"A {inputs.fixed_count} tokens, B {inputs.unique_count}; D {len(inputs.turns)} requests"
    print(f"model dir {model_dir}; {sizes}, {d_tokens:,} tokens; logs {logs}", flush=True)
    worker, worker_port = procs.start_worker("worker", 1, logs / "worker.log", model_dir)
    ctx = Context(args, inputs, model_dir, worker_port, logs)
    runs: dict[str, list[dict[str, Any]]] = {}

    def record(key: str, result: dict[str, Any]) -> None:
        runs.setdefault(key, []).append(result)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()
                 if k not in ("error_samples", "idle", "busy")}  # fmt: skip
        print(f"  {key} r{ctx.rep}: {shown}", flush=True)
        if result.get("errors"):
            print(f"  !!! {key}: {result['errors']} errors: {result.get('error_samples')}", flush=True)

    try:
        for rep in range(1, args.repeats + 1):
            ctx.rep = rep
            order = gateways if rep % 2 else gateways[::-1]
            for name in ("A", "B"):
                if name in args.workloads:
                    for gw in order:
                        record(f"{name}-{gw}", run_a_b(name, gw, ctx))
            if "C" in args.workloads and "ours" in gateways:
                record("C-fixed", run_c(False, ctx))
                record("C-unique", run_c(True, ctx))
            if "D" in args.workloads:
                for gw in order:
                    for variant in (gw, f"{gw}-off"):
                        record(f"D-{variant}", run_d(variant, False, ctx))
                if "ours" in gateways:
                    record("D-ours-grpc", run_d("ours", True, ctx))
                    record("D-ours-off-grpc", run_d("ours-off", True, ctx))
            if "E" in args.workloads:
                for gw in order:
                    result = run_e(gw, ctx)
                    record(f"E-{gw}", result)
    finally:
        worker.stop()

    def r(key: str) -> list[dict[str, Any]]:
        return runs.get(key, [])

    def e(gw: str, phase: str, metric: str) -> float:
        return med([x[phase] for x in r(f"E-{gw}")], metric)

    speed = {gw: med(r(f"D-{gw}"), "req_s") / med(r(f"D-{gw}-off"), "req_s") for gw in ("ours", "smg")}
    grpc_speed = med(r("D-ours-grpc"), "req_s") / med(r("D-ours-off-grpc"), "req_s")
    nan = float("nan")
    c, a, b = args.concurrency, inputs.fixed_count, inputs.unique_count
    turns = f"{args.conversations}x{args.turns}"
    rows: list[tuple[str, str, float, float, int]] = []

    def pair(title: str, ours: str, smg: str | None) -> None:
        """req/s and gateway CPU per request of two run keys."""
        rows.append((title, "req/s", med(r(ours), "req_s"), med(r(smg), "req_s") if smg else nan, 0))
        rows.append(("", "gateway CPU ms/req", per_req_ms(r(ours)), per_req_ms(r(smg)) if smg else nan, 3))

    pair(f"A http, fixed prompt ({a} tok), c={c}", "A-ours", "A-smg")
    pair(f"B http, unique prompts ({b} tok), c={c}", "B-ours", "B-smg")
    pair(f"C grpc, fixed prompt, c={c}", "C-fixed", None)
    pair(f"C grpc, unique prompts, c={c}", "C-unique", None)
    for title, suffix in ((f"D multi-turn {turns}, http, caches off", "-off"), ("D same, caches on", "")):
        pair(title, f"D-ours{suffix}", f"D-smg{suffix}")
        tok_s = (med(r(f"D-ours{suffix}"), "tok_s") / 1000, med(r(f"D-smg{suffix}"), "tok_s") / 1000)
        rows.append(("", "k tokens/s", *tok_s, 0))
    rows.append(("D cache speedup (on / off)", "x req/s", speed["ours"], speed["smg"], 2))
    ours_cpu, smg_cpu = (per_req_ms(r(f"D-{gw}-off")) / per_req_ms(r(f"D-{gw}")) for gw in ("ours", "smg"))
    rows.append(("", "x gateway CPU/req", ours_cpu, smg_cpu, 2))
    rows.append(("D over grpc", "req/s caches off", med(r("D-ours-off-grpc"), "req_s"), nan, 1))
    rows.append(("", "req/s caches on", med(r("D-ours-grpc"), "req_s"), nan, 1))
    rows.append(("", "cache speedup x", grpc_speed, nan, 2))
    rows.append(
        (
            "E small request, idle gateway",
            "p99 ms",
            e("ours", "idle", "p99_ms"),
            e("smg", "idle", "p99_ms"),
            2,
        )
    )
    for metric in ("p50", "p99", "max"):
        title = "E small request during 100k-token ones" if metric == "p50" else ""
        rows.append(
            (title, f"{metric} ms", e("ours", "busy", f"{metric}_ms"), e("smg", "busy", f"{metric}_ms"), 2)
        )
    big = (e("ours", "busy", "big_requests"), e("smg", "busy", "big_requests"))
    rows.append(("", "100k-token requests done", *big, 0))
    a_ratio = med(r("A-ours"), "req_s") / med(r("A-smg"), "req_s")
    targets = [
        ("HTTP tokenize throughput >= 0.5x SMG's (A)", a_ratio >= 0.5, f"{a_ratio:.2f}x"),
        ("multi-turn cache speedup above SMG's (D)", speed["ours"] > speed["smg"],
         f"{speed['ours']:.2f}x vs {speed['smg']:.2f}x"),
    ]  # fmt: skip
    errors = sum(int(x.get("errors", 0)) for rs in runs.values() for x in rs)
    version = procs.package_version(procs.SMG_VENV / "bin" / "python", "smg") if "smg" in gateways else "-"
    text = "\n".join([
        "",
        f"SMG {version} (caches: --tokenizer-cache-enable-l0 --tokenizer-cache-enable-l1); ours: caches "
        f"on by default; median of {args.repeats} repeats, {args.duration:.0f} s windows; "
        f"{os.cpu_count()} CPUs shared by gateway, worker and client",
        render(rows),
        "",
        *(f"{'PASS' if ok else 'FAIL'}  {title}: {value}" for title, ok, value in targets),
        f"{'!!! ' if errors else ''}{errors} failed or wrong responses",
    ])  # fmt: skip
    print(text, flush=True)
    out = args.out_dir / f"tokenize-{stamp}.json"
    procs.write_results(out, {"argv": sys.argv[1:], "runs": runs, "smg": version}, text, logs)
    return 1 if errors else 0


if __name__ == "__main__":
    procs.run_locked(main)
