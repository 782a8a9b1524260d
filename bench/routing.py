"""Routing policies side by side: prefix-cache hit rate, TTFT and throughput on a multi-tenant workload.

Run (from the repository root; the script re-executes itself under ``.venv/bin/python``)::

    python bench/routing.py                          # 4 configurations, ~40 s each
    python bench/routing.py --duration 40 --only ours-rr,ours-ca-events

Configurations (``--only`` takes their keys), each on fresh workers so every run starts cold:
    ours-rr         our gateway, ``--policy round_robin``
    ours-ca-events  our gateway, ``--policy cache_aware``; the workers publish KV events
    ours-ca-approx  our gateway, ``--policy cache_aware``; workers started with ``--no-kv-events``, so the
                    gateway falls back to its approximate prefix tree
    smg-ca-events   the Rust SMG (``.bench/smg-venv/bin/smg launch``), ``--policy cache_aware``, KV events
A gateway that refuses a policy (exits at start-up) gets "not available" in its row.

Workers: ``--workers`` reference workers in realistic mode (``python -m refworker --realistic --script
filler --kv-tokens K``): continuous batching, prefill at 8,000 uncached tokens/s, decode steps of 6 ms +
0.35 ms per running sequence, a prefix cache of K tokens with LRU eviction. K is small by default (32,768:
the 16 system prompts, ~24k tokens, do not fit next to the running requests): where a request lands matters.

Workload (closed loop, ``--concurrency`` users; streaming chat completions, ``max_tokens`` with
``ignore_eos``, thinking off): ``--tenants`` tenants, each with its own system prompt of about
``--system-tokens`` tokens; every user belongs to one tenant and holds conversations of up to ``--turns``
turns, each turn resending the whole conversation (system, earlier user turns and the assistant's
answers) plus a new user message of about ``--user-tokens`` tokens. ``--warmup`` seconds, then a
``--duration`` window: requests that finish inside it are measured.

Figures per configuration: cache hit rate = sum of ``usage.prompt_tokens_details.cached_tokens`` over sum
of ``usage.prompt_tokens`` of the window's responses (and, as a cross-check, the same ratio counted by the
workers over the window), TTFT p50/p99 (request sent -> first content delta), requests/s. Then a
``--random-duration`` run of uniform random prompts (no shared prefix) on the same gateway: requests per
worker (the workers' own counters, ``GetServerInfo``), printed as max/min.

Output: the table, ``.bench/routing-<timestamp>.json`` (+ ``.txt``), process logs in ``.bench/logs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import project_venv
from project_venv import ROOT

project_venv.enter(__file__)

import aiohttp  # noqa: E402
import checks  # noqa: E402
import grpc  # noqa: E402
import orjson  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
import uvloop  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb  # noqa: E402
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc  # noqa: E402


@dataclass(frozen=True, slots=True)
class Config:
    key: str
    title: str
    gateway: str  # "ours" | "smg"
    policy: str
    kv_events: bool


CONFIGS = (
    Config("ours-rr", "ours round_robin", "ours", "round_robin", True),
    Config("ours-ca-events", "ours cache_aware (KV events)", "ours", "cache_aware", True),
    Config("ours-ca-approx", "ours cache_aware (approx tree)", "ours", "cache_aware", False),
    Config("smg-ca-events", "smg cache_aware (KV events)", "smg", "cache_aware", True),
)
# Plain words that the Qwen3 tokenizer takes as one token each (with their leading space).
_WORD_LIST = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name "
    "president team minute idea kid body information back parent face others level office door health person "
    "art war history party result change morning reason research girl guy moment air teacher force education"
)
WORDS = tuple(_WORD_LIST.split())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/routing.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--only", default=",".join(c.key for c in CONFIGS), help="comma-separated configuration keys")
    add("--duration", type=float, default=25.0, help="measured seconds per configuration (default: 25)")
    add("--warmup", type=float, default=4.0, help="seconds of load before the window (default: 4)")
    add("--random-duration", type=float, default=6.0, help="seconds of the random-prompt run (default: 6)")
    add("--workers", type=int, default=4)
    add("--concurrency", type=int, default=32, help="closed-loop users (default: 32)")
    add("--tenants", type=int, default=16)
    add("--system-tokens", type=int, default=1500, help="about this many tokens per tenant system prompt")
    add("--user-tokens", type=int, default=60, help="about this many tokens per user message")
    add("--turns", type=int, default=4, help="turns per conversation")
    add("--max-tokens", type=int, default=32, help="mean completion tokens per response (default: 32)")
    add("--fixed-length", action="store_true", help="every response exactly --max-tokens long")
    add("--kv-tokens", type=int, default=32768, help="each worker's KV cache, tokens")
    add("--worker-args", default="", help="extra reference worker flags, e.g. '--prefill-tps 4000'")
    add("--gateway-cmd", default=f"{procs.VENV_PY} -m adapters.cli launch", help="our gateway's command")
    add("--smg-cmd", default=None, help=f"SMG's command (default: {procs.SMG_VENV}/bin/smg launch)")
    add("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    add("--seed", type=int, default=1)
    add("--out-dir", type=Path, default=ROOT / ".bench")
    args = parser.parse_args()
    known = {c.key for c in CONFIGS}
    args.only = [k.strip() for k in args.only.split(",") if k.strip()]
    if unknown := [k for k in args.only if k not in known]:
        parser.error(f"unknown configuration(s) {unknown}; choose from {sorted(known)}")
    if not 1 <= args.duration <= 3600 or args.warmup < 0 or args.random_duration < 0:
        parser.error("need 1 <= --duration <= 3600, --warmup >= 0, --random-duration >= 0")
    if min(args.workers, args.concurrency, args.tenants, args.turns, args.max_tokens) < 1:
        parser.error("--workers, --concurrency, --tenants, --turns and --max-tokens must be >= 1")
    return args


# ---- the workload --------------------------------------------------------------------------------------


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


@dataclass(slots=True)
class Outcome:
    """The requests that finished inside the window."""

    ok: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttfts_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Window:
    start: float  # epoch seconds
    end: float


class Client:
    """Streaming chat completions; one reply's text, usage and TTFT per call."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str) -> None:
        self.session = session
        self.url = base_url + "/v1/chat/completions"
        self.model = model

    async def chat(
        self, messages: list[dict[str, str]], max_tokens: int
    ) -> tuple[str, dict[str, Any], float]:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "chat_template_kwargs": {"enable_thinking": False},
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        sent = time.perf_counter()
        ttft = 0.0
        text: list[str] = []
        usage: dict[str, Any] = {}
        buffer = b""
        async with self.session.post(self.url, data=orjson.dumps(body)) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:300]!r}")
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    payload = event.removeprefix(b"data:").strip()
                    if not payload or payload == b"[DONE]":
                        continue
                    data = orjson.loads(payload)
                    if "error" in data:
                        raise RuntimeError(f"stream error: {payload[:300]!r}")
                    usage = data.get("usage") or usage
                    for choice in data.get("choices") or ():
                        if delta := (choice.get("delta") or {}).get("content"):
                            text.append(delta)
                            ttft = ttft or time.perf_counter() - sent
        if usage.get("completion_tokens") != max_tokens:
            raise RuntimeError(f"usage {usage}, expected completion_tokens={max_tokens}")
        return "".join(text), usage, ttft


def output_tokens(rng: random.Random, args: argparse.Namespace) -> int:
    """Answer lengths vary (from half to one and a half ``--max-tokens``): with one fixed length, the
    requests admitted together on a worker finish together and come back together, and TTFT measures
    that lock-step instead of routing. ``--fixed-length`` keeps them fixed."""
    if args.fixed_length:
        return int(args.max_tokens)
    return rng.randint(max(1, args.max_tokens // 2), args.max_tokens * 3 // 2)


def record(outcome: Outcome, window: Window, usage: dict[str, Any], ttft: float) -> None:
    if not window.start <= time.time() <= window.end:
        return
    outcome.ok += 1
    outcome.prompt_tokens += int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    outcome.cached_tokens += int(details.get("cached_tokens") or 0)
    outcome.ttfts_ms.append(ttft * 1000)


def failed(outcome: Outcome, window: Window, exc: BaseException) -> None:
    if time.time() >= window.start:
        outcome.errors += 1
        if len(outcome.error_samples) < 5:
            outcome.error_samples.append(f"{type(exc).__name__}: {str(exc)[:300]}")


async def conversation_user(
    client: Client, args: argparse.Namespace, user: int, systems: list[str], window: Window, outcome: Outcome
) -> None:
    rng = random.Random(args.seed * 1_000_003 + user)
    system = systems[user % len(systems)]
    while time.time() < window.end:
        messages = [{"role": "system", "content": system}]
        for _ in range(args.turns):
            if time.time() >= window.end:
                return
            messages.append({"role": "user", "content": words(rng, args.user_tokens)})
            try:
                text, usage, ttft = await client.chat(messages, output_tokens(rng, args))
            except (RuntimeError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failed(outcome, window, exc)
                break  # start a new conversation
            record(outcome, window, usage, ttft)
            messages.append({"role": "assistant", "content": text})


async def random_user(
    client: Client, args: argparse.Namespace, user: int, window: Window, outcome: Outcome
) -> None:
    rng = random.Random(args.seed * 7_000_003 + user)
    while time.time() < window.end:
        # A random first word and a random order: no two prompts share more than a token or two.
        messages = [{"role": "user", "content": f"{rng.randrange(10**9)} {words(rng, args.user_tokens * 4)}"}]
        try:
            _, usage, ttft = await client.chat(messages, output_tokens(rng, args))
        except (RuntimeError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            failed(outcome, window, exc)
            continue
        record(outcome, window, usage, ttft)


async def drive(args: argparse.Namespace, base_url: str, model: str, window: Window, shared: bool) -> Outcome:
    outcome = Outcome()
    rng = random.Random(args.seed)
    systems = [
        f"You are the assistant of tenant {t}. Policies: {words(rng, args.system_tokens)}"
        for t in range(args.tenants)
    ]
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"content-type": "application/json"}
    ) as session:
        client = Client(session, base_url, model)
        if shared:
            users = [
                conversation_user(client, args, u, systems, window, outcome) for u in range(args.concurrency)
            ]
        else:
            users = [random_user(client, args, u, window, outcome) for u in range(args.concurrency)]
        await asyncio.gather(*users)
    return outcome


# ---- workers and gateways ------------------------------------------------------------------------------


def worker_counters(port: int) -> dict[str, int]:
    """The worker's served requests and prompt / cached token totals (its ``GetServerInfo`` record)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        info = pb_grpc.SglangSchedulerStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    data: dict[str, Any] = MessageToDict(info.scheduler_info)
    keys = ("served_requests", "prompt_tokens", "cached_tokens", "kv_event_subscribers")
    return {key: int(data.get(key, 0)) for key in keys}


def counters_delta(ports: Sequence[int], before: list[dict[str, int]]) -> list[dict[str, int]]:
    after = [worker_counters(port) for port in ports]
    return [{k: a[k] - b[k] for k in a} for a, b in zip(after, before, strict=True)]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_config(
    args: argparse.Namespace, config: Config, command: list[str], model_dir: Path, logs: Path
) -> dict[str, Any]:
    worker_args = [
        "--realistic", "--model-path", str(model_dir), "--script", "filler", "--filler-tokens", "4096",
        "--kv-tokens", str(args.kv_tokens), "--log-level", "warn", "--loop", "uvloop",
        *([] if config.kv_events else ["--no-kv-events"]), *shlex.split(args.worker_args),
    ]  # fmt: skip
    result: dict[str, Any] = {"config": asdict(config), "available": False}
    workers = procs.start_workers(args.workers, worker_args, logs, prefix=f"{config.key}-worker")
    ports = [port for _, port in workers]
    port = procs.free_port()
    flags = procs.gateway_flags(ports, model_dir, port, policy=config.policy)
    gateway = procs.start_gateway(config.key, command, [], flags, logs / f"{config.key}-gateway.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        try:
            procs.wait_ready(gateway, base_url, timeout=60)
        except RuntimeError as exc:
            result["reason"] = str(exc).strip().splitlines()[-1][:200]
            return result
        result["available"] = True
        status, body = procs.http_json(base_url + "/v1/models")
        model = body["data"][0]["id"] if status == 200 and isinstance(body, dict) else "default"
        expect = checks.expected_text(model_dir, 16)
        result["sample_problems"] = checks.sample_check(base_url, model, 16, expect)
        for problem in result["sample_problems"]:
            print(f"  !!! {config.key} sample check: {problem}", flush=True)
        # The shared-prefix workload.
        start = time.time() + args.warmup
        window = Window(start, start + args.duration)
        before: list[dict[str, int]] = []

        async def shared() -> Outcome:
            task = asyncio.ensure_future(drive(args, base_url, model, window, shared=True))
            await asyncio.sleep(max(window.start - time.time(), 0))
            before.extend(await asyncio.to_thread(lambda: [worker_counters(p) for p in ports]))
            outcome = await task
            return outcome

        outcome = uvloop.run(shared())
        seen = counters_delta(ports, before)
        result["kv_event_subscribers"] = [c["kv_event_subscribers"] for c in before]
        result["shared"] = summarize(outcome, args.duration)
        worker_prompt = sum(c["prompt_tokens"] for c in seen)
        result["shared"]["worker_hit_rate"] = (
            sum(c["cached_tokens"] for c in seen) / worker_prompt if worker_prompt else None
        )
        # Uniform random prompts: how evenly does the gateway spread them?
        if args.random_duration > 0:
            before = [worker_counters(p) for p in ports]
            window = Window(time.time(), time.time() + args.random_duration)
            random_outcome = uvloop.run(drive(args, base_url, model, window, shared=False))
            per_worker = [c["served_requests"] for c in counters_delta(ports, before)]
            result["random"] = {**summarize(random_outcome, args.random_duration), "per_worker": per_worker}
        if not gateway.alive():
            result["gateway_exited"] = gateway.tail()
    finally:
        gateway.stop()
        for proc, _ in workers:
            proc.stop()
    return result


def summarize(outcome: Outcome, seconds: float) -> dict[str, Any]:
    return {
        "ok": outcome.ok,
        "errors": outcome.errors,
        "error_samples": outcome.error_samples,
        "req_s": outcome.ok / seconds,
        "hit_rate": outcome.cached_tokens / outcome.prompt_tokens if outcome.prompt_tokens else None,
        "mean_prompt_tokens": outcome.prompt_tokens / outcome.ok if outcome.ok else None,
        "ttft_p50_ms": percentile(outcome.ttfts_ms, 0.5),
        "ttft_p99_ms": percentile(outcome.ttfts_ms, 0.99),
    }


# ---- the report ----------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def pct(value: float | None) -> str:
    return fmt(None if value is None else 100 * value, ".1f", " %")


def render(results: list[dict[str, Any]]) -> str:
    head = [
        "configuration",
        "hit rate",
        "(workers)",
        "TTFT p50",
        "TTFT p99",
        "req/s",
        "errors",
        "random: max/min",
    ]
    rows = []
    for result in results:
        title = result["config"]["title"]
        if not result["available"]:
            rows.append([title, "not available", "", "", "", "", "", ""])
            continue
        shared = result["shared"]
        randomized = result.get("random")
        spread = "-"
        if randomized:
            counts = randomized["per_worker"]
            spread = f"{max(counts)}/{min(counts)} {counts}"
        rows.append([
            title,
            pct(shared["hit_rate"]),
            pct(shared["worker_hit_rate"]),
            fmt(shared["ttft_p50_ms"], ".0f", " ms"),
            fmt(shared["ttft_p99_ms"], ".0f", " ms"),
            fmt(shared["req_s"], ".1f"),
            str(shared["errors"] + (randomized or {}).get("errors", 0) + len(result["sample_problems"])),
            spread,
        ])  # fmt: skip
    return report.table(head, rows)


def main() -> int:
    args = parse_args()
    from dataplane.embedded import embedded_model_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out_dir / "logs" / f"routing-{stamp}"
    model_dir = embedded_model_dir()
    configs = [c for c in CONFIGS if c.key in args.only]
    commands = {"ours": shlex.split(args.gateway_cmd)}
    if any(c.gateway == "smg" for c in configs):
        commands["smg"] = shlex.split(args.smg_cmd or f"{procs.ensure_smg_venv()} launch")
    print(
        f"{args.workers} realistic workers (KV {args.kv_tokens} tokens each); {args.tenants} tenants x "
        f"~{args.system_tokens}-token system prompts, {args.concurrency} users, {args.turns}-turn "
        f"conversations, {args.max_tokens} output tokens {'each' if args.fixed_length else 'on average'}; "
        f"{args.warmup:.0f} s warm-up + "
        f"{args.duration:.0f} s window; logs {logs}",
        flush=True,
    )
    results = []
    for config in configs:
        print(f"-- {config.title} ...", flush=True)
        result = run_config(args, config, commands[config.gateway], model_dir, logs)
        if not result["available"]:
            print(f"   not available: {result.get('reason', '')}", flush=True)
        else:
            shared = result["shared"]
            print(
                f"   {shared['ok']} requests, mean prompt {fmt(shared['mean_prompt_tokens'], '.0f')} tokens; "
                f"KV event subscribers per worker {result['kv_event_subscribers']}",
                flush=True,
            )
            for sample in shared["error_samples"] + (result.get("random") or {}).get("error_samples", []):
                print(f"   !!! {sample}", flush=True)
        results.append(result)
    text = "\n".join([
        "",
        "hit rate = cached / prompt tokens from the responses' usage (workers: the same, counted by the "
        "workers); random = requests per worker under uniform random prompts",
        render(results),
    ])  # fmt: skip
    print(text, flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"routing-{stamp}.json"
    procs.write_results(out, {"meta": vars(args), "results": results}, text, logs)
    return 0


if __name__ == "__main__":
    procs.run_locked(main)
