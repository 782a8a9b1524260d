"""Stored responses per second on each history backend (memory, postgres, redis), through the real gateway.

Run (from the repository root; the script re-executes itself under ``.venv/bin/python``)::

    python bench/history.py                                   # about a minute
    python bench/history.py --duration 15 --concurrency 32 --backends postgres,redis

What runs
    Throw-away PostgreSQL and Redis servers on loopback (``scripts/services start``, durability off as
    for the tests: fsync and synchronous_commit off), two reference workers (``--script fixed``, no
    delays: the worker answers a fixed 20-token text at once) and, for each backend in turn, a fresh
    gateway (``python -m adapters.cli launch --policy round_robin --history-backend B …``), warmed up,
    loaded, stopped. The load generator is this process (aiohttp on uvloop), the same for every backend.

Workloads (closed loop, ``--concurrency`` users, non-streaming ``POST /v1/responses``, ``store: true``)
    create  every request a new one-turn response: one write to the store per request
    chain   every user continues its own thread with ``previous_response_id``, starting a new one after
            ``--turns`` turns: a chain read (up to turns-1 ancestors) and a write per request
    Every response is checked (HTTP 200, status completed, the fixed text in its output message); errors
    are counted and shown.

Figures per backend and workload: responses/s in the ``--duration`` window after ``--warmup`` seconds, and
its ratio to memory; latency p50/p99; gateway CPU per response; the database server's CPU per response
(Postgres' whole process tree, or redis-server). Output: the table, ``.bench/history-<timestamp>.json``
(+ ``.txt``), logs in ``.bench/logs/history-<timestamp>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import project_venv
from project_venv import ROOT

project_venv.enter(__file__)

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import procs  # noqa: E402
import procstats  # noqa: E402
import report  # noqa: E402
import uvloop  # noqa: E402

MODEL = "Qwen/Qwen3-0.6B"
BACKENDS = ("memory", "postgres", "redis")
WORKLOADS = ("create", "chain")
FIXED_TEXT_START = "Hello! 你好"  # refworker's fixed script
MAX_ERROR_SAMPLES = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/history.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--backends", default=",".join(BACKENDS), help="comma-separated, from memory,postgres,redis")
    add("--duration", type=float, default=7.0, help="measured seconds per backend and workload (default: 7)")
    add("--warmup", type=float, default=2.0, help="seconds of load before each window (default: 2)")
    add("--concurrency", type=int, default=16, help="closed-loop users (default: 16)")
    add("--turns", type=int, default=4, help="chain workload: turns per thread (default: 4)")
    add("--repeats", type=int, default=1, help="runs per backend, in alternating order (default: 1)")
    add("--workers", type=int, default=2)
    add("--pool-max-size", type=int, default=16, help="the database backends' pool size (default: 16)")
    add("--out-dir", type=Path, default=ROOT / ".bench")
    args = parser.parse_args()
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := [b for b in args.backends if b not in BACKENDS]:
        parser.error(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    if (
        args.duration <= 0
        or args.warmup < 0
        or min(args.concurrency, args.turns, args.workers, args.repeats) < 1
    ):
        parser.error(
            "need --duration > 0, --warmup >= 0, and --concurrency, --turns, --workers, --repeats >= 1"
        )
    return args


# ---- databases -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Services:
    directory: Path
    postgres_url: str
    redis_url: str

    def pid(self, backend: str) -> int | None:
        """The database server's root process (Postgres' postmaster, redis-server)."""
        path = {"postgres": "postgres/postmaster.pid", "redis": "redis/redis.pid"}.get(backend)
        if path is None:
            return None
        return int((self.directory / path).read_text().split()[0])

    def flags(self, backend: str, pool_max_size: int) -> list[str]:
        if backend == "postgres":
            return ["--postgres-db-url", self.postgres_url, "--postgres-pool-max-size", str(pool_max_size)]
        if backend == "redis":
            return ["--redis-url", self.redis_url, "--redis-pool-max-size", str(pool_max_size)]
        return []


def start_services() -> Services:
    script = ROOT / "scripts" / "services"
    subprocess.run([str(script), "install"], check=True, timeout=900)
    # Not under the repository: as root, Postgres runs as the `postgres` user, which must reach it.
    directory = Path(tempfile.mkdtemp(prefix="smg-bench-history-"))
    directory.chmod(0o755)
    out = subprocess.run(
        [str(script), "start", str(directory)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    urls = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return Services(directory, urls["POSTGRES_URL"], urls["REDIS_URL"])


def stop_services(services: Services) -> None:
    subprocess.run([str(ROOT / "scripts" / "services"), "stop", str(services.directory)], timeout=120)
    shutil.rmtree(services.directory, ignore_errors=True)


# ---- load ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pids:
    """The processes whose CPU a window counts: the gateway, the database server, the workers and us."""

    gateway: int
    database: int | None
    workers: list[int]

    def sample(self) -> tuple[float, float, float, float]:
        """CPU seconds so far of (gateway, database, workers + this process, the whole box)."""
        # This process alone: its tree holds the gateway and the workers, counted on their own.
        ours = procstats.tree_cpu_seconds(self.workers) + procstats.cpu_seconds(os.getpid())
        database = procstats.tree_cpu_seconds([self.database]) if self.database is not None else 0.0
        gateway = procstats.tree_cpu_seconds([self.gateway])
        return gateway, database, ours, procstats.BoxCpu.read().busy


@dataclass(slots=True)
class Outcome:
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def error(self, detail: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(detail[:300])


def check(status: int, data: Any, previous: str | None) -> str:
    """The response's id, once it is what a stored turn must be; raises ValueError otherwise."""
    if status != 200 or data.get("status") != "completed":
        raise ValueError(f"HTTP {status}: {str(data)[:200]}")
    texts = [part.get("text", "") for item in data["output"] for part in item.get("content") or ()]
    if not any(text.startswith(FIXED_TEXT_START) for text in texts):
        raise ValueError(f"unexpected output {texts!r}")
    if data.get("previous_response_id") != previous:
        raise ValueError(f"previous_response_id {data.get('previous_response_id')!r}, expected {previous!r}")
    response_id: str = data["id"]
    return response_id


async def user(
    session: aiohttp.ClientSession,
    url: str,
    workload: str,
    turns: int,
    window: tuple[float, float],
    out: Outcome,
) -> None:
    start, end = window
    previous: str | None = None
    turn = 0
    while time.perf_counter() < end:
        body: dict[str, Any] = {"model": MODEL, "input": f"Turn {turn}: say hello.", "store": True}
        if previous is not None:
            body["previous_response_id"] = previous
        sent = time.perf_counter()
        try:
            async with session.post(
                url, data=orjson.dumps(body), headers={"content-type": "application/json"}
            ) as r:
                response_id = check(r.status, orjson.loads(await r.read()), previous)
        except (ValueError, KeyError, aiohttp.ClientError, TimeoutError) as exc:
            if start <= time.perf_counter() <= end:
                out.error(f"{type(exc).__name__}: {exc}")
            previous, turn = None, 0
            continue
        done = time.perf_counter()
        if start <= done <= end:
            out.ok += 1
            out.latencies_ms.append((done - sent) * 1e3)
        turn += 1
        previous = response_id if workload == "chain" and turn < turns else None
        turn %= turns


async def load(args: argparse.Namespace, base_url: str, workload: str, pids: Pids) -> dict[str, Any]:
    out = Outcome()
    now = time.perf_counter()
    window = (now + args.warmup, now + args.warmup + args.duration)
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        users = [
            asyncio.create_task(user(session, f"{base_url}/v1/responses", workload, args.turns, window, out))
            for _ in range(args.concurrency)
        ]
        await asyncio.sleep(args.warmup)
        before = pids.sample()
        await asyncio.sleep(args.duration)
        after = pids.sample()
        await asyncio.gather(*users)
    gateway, database, ours, box = (b - a for a, b in zip(before, after, strict=True))

    def per(seconds: float) -> float | None:
        return seconds / out.ok * 1e3 if out.ok else None

    return {
        "ok": out.ok,
        "errors": out.errors,
        "error_samples": out.error_samples,
        "resp_s": out.ok / args.duration,
        "latency_p50_ms": report.percentile(out.latencies_ms, 50),
        "latency_p99_ms": report.percentile(out.latencies_ms, 99),
        "gateway_cpu_ms_per_resp": per(gateway),
        "db_cpu_ms_per_resp": per(database) if pids.database is not None else None,
        # CPU that none of the benchmark's processes took: other people's work on this shared box.
        "foreign_cpu_cores": (box - gateway - database - ours) / args.duration,
    }


def run_backend(
    args: argparse.Namespace,
    backend: str,
    services: Services,
    workers: list[tuple[procs.Proc, int]],
    model_dir: Path,
    logs: Path,
) -> dict[str, dict[str, Any]]:
    port = procs.free_port()
    flags = [
        *procs.gateway_flags([worker_port for _, worker_port in workers], model_dir, port),
        "--history-backend", backend, *services.flags(backend, args.pool_max_size),
    ]  # fmt: skip
    base_cmd = [str(procs.VENV_PY), "-m", "adapters.cli", "launch"]
    gateway = procs.start_gateway(f"gateway-{backend}", base_cmd, [], flags, logs / f"gateway-{backend}.log")
    try:
        procs.wait_ready(gateway, f"http://127.0.0.1:{port}")
        pids = Pids(gateway.pid, services.pid(backend), [proc.pid for proc, _ in workers])
        return {w: uvloop.run(load(args, f"http://127.0.0.1:{port}", w, pids)) for w in WORKLOADS}
    finally:
        gateway.stop()


# ---- report ----------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the repeats; errors are summed."""
    merged: dict[str, Any] = {"errors": sum(run["errors"] for run in runs)}
    for key in ("resp_s", "latency_p50_ms", "latency_p99_ms", "gateway_cpu_ms_per_resp", "db_cpu_ms_per_resp",
                "foreign_cpu_cores"):  # fmt: skip
        values = [run[key] for run in runs if run[key] is not None]
        merged[key] = statistics.median(values) if values else None
    return merged


def render(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    head = ["backend", "workload", "resp/s", "vs memory", "p50 ms", "p99 ms", "gw CPU ms/resp",
            "db CPU ms/resp", "other CPU", "errors"]  # fmt: skip
    rows = []
    for workload in WORKLOADS:
        memory = median(results["memory"][workload])["resp_s"] if "memory" in results else None
        for backend, by_workload in results.items():
            r = median(by_workload[workload])
            ratio = r["resp_s"] / memory if memory else None
            rows.append([
                backend, workload, fmt(r["resp_s"], ".0f"), fmt(ratio, ".2f"),
                fmt(r["latency_p50_ms"], ".1f"), fmt(r["latency_p99_ms"], ".1f"),
                fmt(r["gateway_cpu_ms_per_resp"], ".2f"), fmt(r["db_cpu_ms_per_resp"], ".2f"),
                fmt(r["foreign_cpu_cores"], ".2f"), str(r["errors"]),
            ])  # fmt: skip
    return report.table(head, rows)


def main() -> int:
    args = parse_args()
    from dataplane.embedded import embedded_model_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out_dir / "logs" / f"history-{stamp}"
    model_dir = embedded_model_dir()
    services = start_services()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        b: {w: [] for w in WORKLOADS} for b in args.backends
    }
    try:
        worker_args = ["--model-path", str(model_dir), "--script", "fixed", "--ttft-ms", "0", "--itl-ms", "0",
                       "--log-level", "warn", "--loop", "uvloop"]  # fmt: skip
        workers = procs.start_workers(args.workers, worker_args, logs)
        print(
            f"{args.workers} reference workers (fixed script, no delays); {args.concurrency} users, "
            f"store=true; {args.warmup:.0f} s warm-up + {args.duration:.0f} s window per backend and "
            f"workload, {args.repeats} repeat(s) in alternating order; logs {logs}",
            flush=True,
        )
        for repeat in range(args.repeats):
            for backend in args.backends if repeat % 2 == 0 else args.backends[::-1]:
                print(f"-- {backend} ...", flush=True)
                for workload, result in run_backend(
                    args, backend, services, workers, model_dir, logs
                ).items():
                    results[backend][workload].append(result)
                    for sample in result["error_samples"]:
                        print(f"   !!! {workload}: {sample}", flush=True)
    finally:
        stop_services(services)
    text = "\n".join([
        "",
        "create = a new stored response per request; chain = previous_response_id threads of "
        f"{args.turns} turns (a chain read + a write per request); vs memory = resp/s / memory's; "
        "other CPU = cores busy with processes not in the benchmark (the box is shared)",
        render(results),
    ])  # fmt: skip
    print(text, flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"history-{stamp}.json"
    procs.write_results(out, {"meta": vars(args), "results": results}, text, logs)
    return 0


if __name__ == "__main__":
    procs.run_locked(main)
