"""Per-window metrics, medians over repeats, the comparison table and the issue's targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

GATEWAYS = ("ours", "smg")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def window_metrics(run: dict[str, Any]) -> dict[str, Any]:
    """Figures of one measured window from the load generator's report and the /proc samples."""
    load, seconds = run["load"], run["seconds"]
    ok, tokens = load["ok"], load["completion_tokens"]
    gw_cpu, worker_cpu, load_cpu = run["gateway_cpu_s"], run["workers_cpu_s"], run["loadgen_cpu_s"]
    box_busy, box_total = run["box_busy_s"], run["box_total_s"]

    def per(value: float, count: int, scale: float) -> float | None:
        return value / count * scale if count else None

    return {
        "requests": ok,
        "errors": load["errors"],
        "req_s": ok / seconds,
        "out_tok_s": tokens / seconds,
        "gw_cpu_ms_per_req": per(gw_cpu, ok, 1e3),
        "gw_cpu_us_per_tok": per(gw_cpu, tokens, 1e6),
        "gw_cpu_cores": gw_cpu / seconds,
        "worker_cpu_ms_per_req": per(worker_cpu, ok, 1e3),
        "loadgen_cpu_ms_per_req": per(load_cpu, ok, 1e3),
        "box_busy_pct": 100 * box_busy / box_total if box_total else None,
        "foreign_cpu_cores": (box_busy - gw_cpu - worker_cpu - load_cpu) / seconds,
        "ttft_p50_ms": percentile(load["ttfts_ms"], 50),
        "ttft_p90_ms": percentile(load["ttfts_ms"], 90),
        "latency_p50_ms": percentile(load["latencies_ms"], 50) or load.get("latency_p50_ms"),
        "latency_p90_ms": percentile(load["latencies_ms"], 90) or load.get("latency_p90_ms"),
        "sse_events_per_req": load["sse_events"] / ok if ok else None,
        "client_reads_per_req": load["reads"] / ok if ok and load.get("reads") else None,
        "connections": load["connections"],
        "peak_rss_mib": run["peak_rss_mib"],
    }


def median_metrics(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every figure over the repeats; errors and requests are summed, RSS also gets its max."""
    if not windows:
        return {}
    merged: dict[str, Any] = {}
    for key in windows[0]:
        values = [w[key] for w in windows if w[key] is not None]
        if key in ("errors", "requests"):
            merged[key] = sum(values)
        else:
            merged[key] = statistics.median(values) if values else None
    merged["peak_rss_mib_max"] = max(w["peak_rss_mib"] for w in windows)
    merged["repeats"] = len(windows)
    return merged


@dataclass(frozen=True, slots=True)
class Row:
    shape: str
    label: str
    key: str
    digits: int = 1


TABLE_ROWS = {
    "a": [
        Row("a", "req/s", "req_s"),
        Row("a", "output tok/s", "out_tok_s", 0),
        Row("a", "gateway CPU ms/req  <==", "gw_cpu_ms_per_req", 3),
        Row("a", "latency p50 ms", "latency_p50_ms", 1),
        Row("a", "gateway CPU cores used", "gw_cpu_cores", 2),
    ],
    "b": [
        Row("b", "req/s", "req_s"),
        Row("b", "output tok/s", "out_tok_s", 0),
        Row("b", "gateway CPU us/out-token  <==", "gw_cpu_us_per_tok", 2),
        Row("b", "gateway CPU ms/req", "gw_cpu_ms_per_req", 3),
        Row("b", "TTFT p50 ms (at c=64)", "ttft_p50_ms", 1),
        Row("b", "gateway CPU cores used", "gw_cpu_cores", 2),
    ],
    "c": [
        Row("c", "TTFT p50 ms", "ttft_p50_ms", 2),
        Row("c", "TTFT p90 ms", "ttft_p90_ms", 2),
        Row("c", "latency p50 ms (64 tok)", "latency_p50_ms", 2),
        Row("c", "gateway CPU ms/req  <==", "gw_cpu_ms_per_req", 3),
    ],
}
CONTEXT_KEYS = (
    ("errors (sum over repeats)", "errors", 0),
    ("requests measured (sum)", "requests", 0),
    ("peak RSS MiB (median)", "peak_rss_mib", 1),
    ("worker CPU ms/req", "worker_cpu_ms_per_req", 3),
    ("loadgen CPU ms/req", "loadgen_cpu_ms_per_req", 3),
    ("SSE events/req", "sse_events_per_req", 1),
    ("client socket reads/req", "client_reads_per_req", 1),
    ("client connections", "connections", 0),
    ("box busy %", "box_busy_pct", 0),
    ("other CPU on box (cores)", "foreign_cpu_cores", 2),
)


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(ours: float | None, smg: float | None) -> str:
    return "-" if not ours or not smg else f"{ours / smg:.2f}"


def build_rows(summary: dict[str, dict[str, dict[str, Any]]], titles: dict[str, str]) -> list[list[str]]:
    rows: list[list[str]] = []
    for shape, by_gw in summary.items():
        ours, smg = by_gw.get("ours", {}), by_gw.get("smg", {})
        for row in TABLE_ROWS[shape]:
            o, s = ours.get(row.key), smg.get(row.key)
            rows.append([f"({shape}) {titles[shape]}", row.label, _fmt(o, row.digits), _fmt(s, row.digits),
                         _ratio(o, s)])  # fmt: skip
        for label, key, digits in CONTEXT_KEYS:
            o, s = ours.get(key), smg.get(key)
            ratio = _ratio(o, s) if key == "peak_rss_mib" else ""
            rows.append([f"({shape})", f"  {label}", _fmt(o, digits), _fmt(s, digits), ratio])
    peak = {gw: max((by_gw.get(gw, {}).get("peak_rss_mib_max") or 0 for by_gw in summary.values()),
                    default=0) or None for gw in GATEWAYS}  # fmt: skip
    rows.append(["all", "peak RSS MB (max)", _fmt(peak["ours"], 1), _fmt(peak["smg"], 1),
                 _ratio(peak["ours"], peak["smg"])])  # fmt: skip
    return rows


def targets(summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The issue's targets, each PASS, FAIL or n/a (shape not run, one gateway missing, or errors)."""

    def get(shape: str, gw: str, key: str) -> float | None:
        value: float | None = summary.get(shape, {}).get(gw, {}).get(key)
        return value

    def errors(shape: str) -> int:
        return sum(summary.get(shape, {}).get(gw, {}).get("errors", 0) for gw in GATEWAYS)

    checks: list[dict[str, Any]] = []

    def add(name: str, shape: str | None, ours: float | None, smg: float | None, ok: bool | None) -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        if shape and errors(shape) and verdict == "PASS":
            verdict = "FAIL (errors)"
        checks.append({"target": name, "ours": ours, "smg": smg, "verdict": verdict})

    for shape in ("a", "b"):
        o, s = get(shape, "ours", "req_s"), get(shape, "smg", "req_s")
        add(f"({shape}) req/s >= 0.5x SMG", shape, o, s, None if o is None or s is None else o >= 0.5 * s)
    o, s = get("c", "ours", "ttft_p50_ms"), get("c", "smg", "ttft_p50_ms")
    add("(c) TTFT p50 <= SMG + 1 ms", "c", o, s, None if o is None or s is None else o <= s + 1.0)
    peaks = {
        gw: max((get(sh, gw, "peak_rss_mib_max") or 0.0 for sh in summary), default=0.0) or None
        for gw in GATEWAYS
    }
    o, s = peaks["ours"], peaks["smg"]
    add("peak RSS <= 1.5x SMG", None, o, s, None if o is None or s is None else o <= 1.5 * s)
    return checks


def render(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    align = [str.ljust, str.ljust, *[str.rjust] * (len(headers) - 2)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(align[i](str(c), widths[i]) for i, c in enumerate(r)) for r in rows]
    return "\n".join(lines)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table, every column left-aligned (the bench scripts' printed figures)."""
    everything = [headers, *rows]
    widths = [max(len(r[i]) for r in everything) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in everything]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def render_targets(checks: list[dict[str, Any]]) -> str:
    rows = [[c["target"], _fmt(c["ours"], 2), _fmt(c["smg"], 2), c["verdict"]] for c in checks]
    return table(["target", "ours", "smg", "verdict"], rows)
