"""What tracing adds to each request, counted in Python opcodes instead of timed.

Run (from the repository root; re-executes itself under ``.venv/bin/python``)::

    python bench/tracing_opcodes.py                  # sampling 1.0, non-streamed, ~1 min
    python bench/tracing_opcodes.py --ratio 0         # what a sampled-out request costs
    python bench/tracing_opcodes.py --stream --top 40

Two reference workers and ``rotel`` as in bench/tracing.py, and one gateway launched with
``--enable-trace`` under ``bench/opcount_gateway.py``, which switches tracing off and on inside that
process (off, on, off, on) and counts the opcodes its event-loop thread executes per request in each
state, under the closed-loop load of bench/tracing.py (c=32). Counting slows the gateway ~20x, so each
state sees a few hundred requests; the counts barely move from run to run or with the machine's load,
which is what makes them useful: a change to the tracing path can be judged by them where timed runs
differ by more than the change. Export-thread work (encoding, the OTLP call) is not on the event loop and
not counted: bench/tracing.py measures the whole.

Output: opcodes per request off and on (each state twice), the difference by file and by function (the
second off/on pair), and ``.bench/tracing-opcodes-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import project_venv
from project_venv import ROOT

project_venv.enter(__file__)

import checks  # noqa: E402
import procs  # noqa: E402
from tracing import CONCURRENCY, MAX_TOKENS, TOKENS_PER_CHUNK, start_rotel  # noqa: E402

COUNT_SECONDS = 4.0
# Tracing's own code. The rest of the request moves by tens of opcodes per file between states anyway
# (how many worker messages arrive together depends on timing), which adds up to ~±1,000 in the total.
TRACING_CODE = (
    "adapters/tracer.py", "adapters/tracing.py", "adapters/otlp_encoder.py", "adapters/trace_context.py",
    "adapters/span_batcher.py", "dataplane/telemetry.py",
    "dataplane/channel.py", "opentelemetry/",
)  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/tracing_opcodes.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ratio", type=float, default=1.0, help="--trace-sampling-ratio (default 1.0)")
    parser.add_argument("--stream", action="store_true", help="streamed requests instead")
    parser.add_argument("--top", type=int, default=20, help="files and functions listed")
    parser.add_argument("--out-dir", type=Path, default=ROOT / ".bench")
    return parser.parse_args()


def differences(off: dict[str, float], on: dict[str, float]) -> dict[str, float]:
    return {key: on.get(key, 0.0) - off.get(key, 0.0) for key in off.keys() | on.keys()}


def report(results: list[dict[str, Any]], top: int) -> str:
    lines = [
        f"{r['state']:>3}: {sum(r['opcodes'].values()):8,.0f} opcodes per request ({r['requests']} requests)"
        for r in results
    ]
    off, on = results[-2]["opcodes"], results[-1]["opcodes"]
    extra = sum(on.values()) - sum(off.values())
    by_function = differences(off, on)
    own = sum(d for key, d in by_function.items() if key.startswith(TRACING_CODE))
    lines.append(
        f"tracing adds {own:,.0f} opcodes per request in its own code ({', '.join(TRACING_CODE)}); "
        f"{extra:,.0f} in all, timing noise included (last pair)"
    )
    by_file: dict[str, float] = {}
    for key, difference in by_function.items():
        file = key.split(":")[0]
        by_file[file] = by_file.get(file, 0.0) + difference
    lines.append("\nby file")
    ranked_files = sorted(by_file.items(), key=lambda item: -abs(item[1]))[:top]
    lines += [f"  {d:+8.1f}  {f}" for f, d in ranked_files]
    lines.append("\nby function")
    ranked = sorted(by_function.items(), key=lambda item: -abs(item[1]))[:top]
    lines += [f"  {d:+8.1f}  {key}" for key, d in ranked]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    from dataplane.embedded import embedded_model_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out_dir / "logs" / f"tracing-opcodes-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    results_file = logs / "opcodes.json"
    model_dir = embedded_model_dir()
    expect = checks.expected_text(model_dir, MAX_TOKENS)
    rotel, grpc_port, _ = start_rotel(logs)
    workers = [
        procs.start_worker(f"worker{i}", TOKENS_PER_CHUNK, logs / f"worker{i}.log", model_dir) for i in (1, 2)
    ]
    port = procs.free_port()
    flags = procs.gateway_flags([p for _, p in workers], model_dir, port)
    flags += ["--enable-trace", "--otlp-traces-endpoint", f"127.0.0.1:{grpc_port}"]
    flags += ["--trace-sampling-ratio", str(args.ratio)]
    wrapper = [str(procs.VENV_PY), str(Path(__file__).with_name("opcount_gateway.py"))]
    base_cmd = [*wrapper, str(results_file), str(COUNT_SECONDS), "launch"]
    gateway = procs.start_gateway("gateway", base_cmd, [], flags, logs / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    loader = None
    try:
        procs.wait_ready(gateway, url)
        _, body = procs.http_json(url + "/v1/models")
        model = body["data"][0]["id"]
        start_at = time.time() + 0.5
        cmd = [
            *procs.loadgen_cmd(), "--url", url, "--model", model, "--concurrency", str(CONCURRENCY),
            "--start-at", f"{start_at:.3f}", "--end-at", f"{start_at + 600:.3f}",
            "--max-tokens", str(MAX_TOKENS), "--expect-chars", str(len(expect)),
            *(["--stream"] if args.stream else []),
        ]  # fmt: skip
        loader = procs.Proc("loadgen", cmd, logs / "load.log")
        deadline = time.time() + 300
        while not results_file.exists():
            if time.time() > deadline or not gateway.alive():
                raise RuntimeError(f"no counts from the gateway:\n{gateway.tail()}")
            time.sleep(0.5)
        results = json.loads(results_file.read_text())
    finally:
        if loader is not None:
            loader.stop()
        gateway.stop()
        for proc, _ in workers:
            proc.stop()
        rotel.stop()
    shape = "streamed" if args.stream else "non-streamed"
    head = f"{shape} chat, {MAX_TOKENS} output tokens, c={CONCURRENCY}, sampling {args.ratio:g}"
    text = head + "\n" + report(results, args.top)
    print(text, flush=True)
    procs.write_results(args.out_dir / f"tracing-opcodes-{stamp}.json", results, text, logs)
    return 0


if __name__ == "__main__":
    procs.run_locked(main)
