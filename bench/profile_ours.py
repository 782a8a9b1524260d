"""Profile OUR gateway under one benchmark shape with py-spy, and summarise where its time goes.

Run (from the repository root; re-executes itself under ``.venv/bin/python``)::

    python bench/profile_ours.py --shape b                 # 10 s at 200 Hz while shape (b) load runs
    python bench/profile_ours.py --shape a --native        # include C frames (uvloop, upb, orjson...)
    python bench/profile_ours.py --summarize .bench/ours-b.txt   # re-read an earlier raw profile

It starts the two reference workers and the gateway exactly as bench/compare.py does, drives the shape's
load (wrk for (a) when installed, else the aiohttp load generator), then runs ``py-spy record --pid
<gateway> --format raw`` (collapsed stacks, ``.bench/ours-<shape>.txt``) and, unless ``--no-speedscope``,
a second recording in speedscope format (``.bench/ours-<shape>.speedscope.json``, open it at
speedscope.app). Needs py-spy in .venv (``.venv/bin/pip install py-spy``).

The summary: self time (the function is the innermost Python frame of the sample) and cumulative time
(the function is anywhere on the stack), as % of the non-idle samples, plus self time per package / file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import project_venv
from project_venv import ROOT

project_venv.enter(__file__)

import checks  # noqa: E402
import compare  # noqa: E402
import procs  # noqa: E402
import workload  # noqa: E402
import wrkload  # noqa: E402

PY_SPY = ROOT / ".venv" / "bin" / "py-spy"


def parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [f.strip() for f in stack.split(";")]
            # py-spy prefixes the process and thread; real frames look like "func (file:line)".
            stacks.append(([f for f in frames if f.endswith(")") and "(" in f], int(count)))
    return stacks


# Leaves of threads that are blocked, not working: py-spy cannot always tell (see the report).
IDLE_LEAVES = (
    "concurrent/futures/thread.py:_worker",
    "threading.py:Condition.wait",
    "threading.py:Thread.join",
)


# Coarse stages of a request, as frames whose presence on the stack charges a sample to the stage.
STAGES = (
    (
        "HTTP in: aiohttp request parsing (protocol callbacks)",
        ("aiohttp/web_protocol.py:RequestHandler.data_received",),
    ),
    (
        "HTTP in: JSON body -> GenerateRequest",
        ("adapters/params.py:parse_body", "adapters/chat/request.py:parse_chat"),
    ),
    ("prepare: chat template render", ("dataplane/tokenizer.py:ModelTokenizer.render_chat",)),
    ("prepare: tokenize prompt", ("dataplane/tokenizer.py:ModelTokenizer.encode",)),
    (
        "gRPC out: encode + send request",
        (
            "grpclib/client.py:Stream.send_request",
            "grpclib/client.py:Stream.send_message",
            "dataplane/client.py:_encode",
        ),
    ),
    ("gRPC in: h2 frames (protocol callbacks)", ("grpclib/protocol.py:H2Protocol.data_received",)),
    (
        "gRPC in: recv_message + decode",
        (
            "grpclib/client.py:Stream.recv_message",
            "dataplane/client.py:_chunk",
            "dataplane/client.py:_complete",
        ),
    ),
    (
        "gRPC stream open/close bookkeeping",
        (
            "grpclib/client.py:Stream.__aexit__",
            "grpclib/client.py:Stream.__aenter__",
            "grpclib/client.py:Stream.recv_initial_metadata",
            "grpclib/client.py:Stream.recv_trailing_metadata",
        ),
    ),
    (
        "output: detokenize + assemble events",
        (
            "dataplane/output.py:ResponseAssembler.feed",
            "dataplane/output.py:ResponseAssembler.finish",
            "dataplane/output.py:ResponseAssembler.__init__",
        ),
    ),
    ("HTTP out: SSE chunk JSON + write", ("adapters/sse.py:SseWriter.send",)),
    (
        "HTTP out: response headers / body / eof",
        (
            "aiohttp/web_response.py:StreamResponse.prepare",
            "aiohttp/web_response.py:Response.write_eof",
            "aiohttp/web_response.py:StreamResponse.write_eof",
        ),
    ),
    ("non-streaming: JSON body", ("adapters/chat/response.py:chat_completion",)),
    ("garbage collector (native only)", ("libpython3.11.so.1.0:gc_collect_main",)),
)


# Self time by layer: robust even when --nonblocking sampling truncates a stack (only leaves are needed).
LAYERS = (
    (
        "gRPC client (grpclib, h2, hyperframe, hpack, protobuf, dataplane/client.py)",
        (
            "grpclib",
            "h2",
            "hyperframe",
            "hpack",
            "google",
            "dataplane/client.py",
            "proto (generated)",
            "betterproto2",
        ),
    ),
    ("HTTP server + socket writes (aiohttp, multidict, yarl)", ("aiohttp", "multidict", "yarl")),
    (
        "prompt: chat template + tokenize (dataplane/tokenizer.py, jinja2, transformers, tokenizers)",
        ("dataplane/tokenizer.py", "jinja2", "transformers", "<template>", "tokenizers", "markupsafe"),
    ),
    (
        "output: detokenize, stops, assemble (dataplane/output.py, detokenizer.py)",
        ("dataplane/output.py", "dataplane/detokenizer.py"),
    ),
    (
        "response formatting: SSE + JSON (adapters/sse.py, adapters/chat/response.py, orjson)",
        ("adapters/sse.py", "adapters/chat/response.py", "orjson", "adapters/openai_format.py"),
    ),
    (
        "request parsing (adapters/params.py, adapters/chat/request.py, adapters/context.py, random)",
        ("adapters/params.py", "adapters/chat/request.py", "adapters/context.py", "random"),
    ),
    (
        "pipeline / gateway glue (dataplane/pipeline.py, gateway.py, workers.py, routing/)",
        ("dataplane/pipeline.py", "dataplane/gateway.py", "dataplane/workers.py", "dataplane/routing/"),
    ),
    ("dataclass __init__ etc. (<string>)", ("<string>",)),
    ("asyncio + event loop", ("asyncio", "uvloop")),
)


def _frame_key(frame: str) -> str:
    """'func (/path/to/pkg/file.py:123)' -> 'pkg/file.py:func' (line numbers folded, paths shortened)."""
    func, _, where = frame.rpartition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{file}:{func}"


def _package(key: str) -> str:
    """The group a frame's self time is charged to: a package, one of our files, or a stdlib module."""
    file = key.rsplit(":", 1)[0]
    parts = file.split("/")
    if parts[0] in ("dataplane", "adapters", "parsers", "proto", "refworker"):
        return file if parts[0] != "proto" else "proto (generated)"
    if len(parts) > 1:
        return parts[0]
    return file.removesuffix(".py")


def summarize(path: Path, top: int = 25, seconds: float | None = None, rate: int | None = None) -> str:
    stacks = parse_collapsed(path)
    idle = sum(c for frames, c in stacks if frames and _frame_key(frames[-1]) in IDLE_LEAVES)
    stacks = [(f, c) for f, c in stacks if f and _frame_key(f[-1]) not in IDLE_LEAVES]
    total = sum(count for _, count in stacks)
    if not total:
        return f"{path}: no samples"
    self_time: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    callers: dict[str, Counter[str]] = {}
    stack_keys: list[tuple[set[str], int]] = []
    for frames, count in stacks:
        keys = [_frame_key(f) for f in frames]
        stack_keys.append((set(keys), count))
        self_time[keys[-1]] += count
        packages[_package(keys[-1])] += count
        if len(keys) > 1:
            callers.setdefault(keys[-1], Counter())[keys[-2]] += count
        for key in set(keys):
            cumulative[key] += count
    head = f"{path}: {total} non-idle samples"
    if seconds and rate:
        head += f" ({seconds * rate:.0f} sample times; runnable-but-waiting-for-a-core counts as non-idle)"
    lines = [head, f"excluded {idle} samples of blocked thread-pool threads" if idle else ""]

    def table(title: str, counter: Counter[str], n: int, with_callers: bool = False) -> None:
        lines.append(f"\n{title}")
        for key, count in counter.most_common(n):
            lines.append(f"  {100 * count / total:5.1f}%  {key}")
            if with_callers and key in callers:
                for caller, c in callers[key].most_common(2):
                    lines.append(f"            {100 * c / total:4.1f}% from {caller}")

    lines.append("\nstages (cumulative, a lower bound when sampling truncated stacks)")
    for label, marks in STAGES:
        hits = sum(count for stack, count in stack_keys if any(m in stack for m in marks))
        if hits:
            lines.append(f"  {100 * hits / total:5.1f}%  {label}")
    lines.append("\nself time by layer")
    for label, members in LAYERS:
        share = sum(count for pkg, count in packages.items() if pkg in members)
        lines.append(f"  {100 * share / total:5.1f}%  {label}")
    table("self time by package / our file", packages, 20)
    table("self time by function (top callers below)", self_time, top, with_callers=True)
    table("cumulative time by function", cumulative, top)
    return "\n".join(line for line in lines if line is not None)


def record(pid: int, out: Path, fmt: str, seconds: float, rate: int, native: bool, nonblocking: bool) -> None:
    cmd = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", str(rate),
           "--format", fmt, "--output", str(out), "--nolineno", "--full-filenames"]  # fmt: skip
    if native:
        cmd.append("--native")
    if nonblocking:
        cmd.append("--nonblocking")
    subprocess.run(cmd, check=True, timeout=seconds + 60, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(compare.SHAPES), default="b")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per recording (default: 10)")
    parser.add_argument("--rate", type=int, default=200, help="samples per second (default: 200)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--no-speedscope", action="store_true")
    parser.add_argument("--unique-prompts", action="store_true", help="as in bench/compare.py")
    parser.add_argument(
        "--blocking",
        dest="nonblocking",
        action="store_false",
        help="let py-spy pause the gateway for each sample (default: --nonblocking; in this VM a paused "
        "thread stops at its next syscall, which piles samples onto getpid/write call sites)",
    )
    parser.add_argument("--gateway-cmd", default=f"{procs.VENV_PY} -m adapters.cli launch")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--summarize", type=Path, help="only summarise an existing raw profile")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize, args.top))
        return 0
    if not PY_SPY.exists():
        raise SystemExit(f"{PY_SPY} missing: .venv/bin/pip install py-spy")
    from dataplane.embedded import embedded_model_dir

    shape = compare.SHAPES[args.shape]
    model_dir = embedded_model_dir()
    out_dir = ROOT / ".bench"
    logs = out_dir / "logs" / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    recordings = 1 if args.no_speedscope else 2
    busy_for = args.warmup + recordings * (args.duration + 3) + 5
    expect = checks.expected_text(model_dir, shape.max_tokens)
    procs_started: list[procs.Proc] = []
    try:
        ports = []
        for i in (1, 2):
            proc, port = procs.start_worker(
                f"worker{i}", shape.tokens_per_chunk, logs / f"worker{i}.log", model_dir
            )
            procs_started.append(proc)
            ports.append(port)
        gw_port = procs.free_port()
        flags = procs.gateway_flags(ports, model_dir, gw_port)
        gateway = procs.start_gateway("ours", args.gateway_cmd.split(), [], flags, logs / "ours.log")
        procs_started.append(gateway)
        base_url = f"http://127.0.0.1:{gw_port}"
        procs.wait_ready(gateway, base_url)
        _, models = procs.http_json(base_url + "/v1/models")
        model = models["data"][0]["id"]
        for problem in checks.sample_check(base_url, model, shape.max_tokens, expect, args.unique_prompts):
            print(f"!!! sample check: {problem}")
        if not shape.stream and wrkload.available():
            body = workload.chat_body(model, shape.max_tokens, False, args.unique_prompts)
            script = wrkload.write_script(
                logs / "post.lua", body, expect, shape.max_tokens, args.unique_prompts
            )
            load_cmd = wrkload.command(base_url, script, shape.concurrency, round(busy_for), 60)
        else:
            now = time.time()
            load_cmd = [
                *procs.loadgen_cmd(), "--url", base_url, "--model", model,
                "--concurrency", str(shape.concurrency), "--start-at", str(now + 1),
                "--end-at", str(now + busy_for), "--max-tokens", str(shape.max_tokens),
                "--expect-chars", str(len(expect)), *(["--stream"] if shape.stream else []),
                *(["--unique-prompts"] if args.unique_prompts else []),
            ]  # fmt: skip
        loader = procs.Proc("load", load_cmd, logs / "load.log")
        procs_started.append(loader)
        time.sleep(args.warmup)
        suffix = "-unique" if args.unique_prompts else ""
        raw = out_dir / f"ours-{shape.name}{suffix}.txt"
        print(f"recording {args.duration:.0f} s of shape ({shape.name}) into {raw} ...", flush=True)
        record(gateway.pid, raw, "raw", args.duration, args.rate, args.native, args.nonblocking)
        if not args.no_speedscope:
            speed = out_dir / f"ours-{shape.name}{suffix}.speedscope.json"
            record(gateway.pid, speed, "speedscope", args.duration, args.rate, args.native, args.nonblocking)
            print(f"speedscope profile: {speed}")
        loader.popen.wait(timeout=busy_for + 90)
        tail = loader.tail(40)
        if load_cmd[0] == "wrk":
            report = wrkload.parse(tail, shape.max_tokens)
        else:
            report = json.loads([line for line in tail.splitlines() if line.startswith("{")][-1])
        print(f"load: {report['ok']} good responses, {report['errors']} errors {report['error_kinds']}")
        print(summarize(raw, args.top, args.duration, args.rate))
    finally:
        for proc in reversed(procs_started):
            proc.stop()
    return 0


if __name__ == "__main__":
    try:
        if "--summarize" in sys.argv:
            sys.exit(main())
        with procs.bench_lock(timeout=1800):
            sys.exit(main())
    finally:
        procs.stop_all()
