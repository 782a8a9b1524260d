"""wrk (C, Debian's ``wrk`` package) as the non-streaming load generator, with every response checked in Lua.

Measured on this 2-core box against SMG at ~2,300 req/s: wrk costs ~0.02 ms of client CPU per request,
the aiohttp load generator ~0.16 ms (as much as half of what SMG itself spends). The client shares the
cores with the gateway, so the cheaper client lets the faster gateway show its real ceiling.

The Lua ``response()`` hook counts a response as good only if it is HTTP 200 and contains the exact
expected ``"content":"..."``, ``"completion_tokens":N`` and ``"finish_reason":"length"``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import workload

_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = %(body)s
local expect_content = %(content)s
local expect_tokens = %(tokens)s
local expect_finish = '"finish_reason":"length"'
local threads = {}
%(request)s
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0; bad_status = 0; sample = "" end
function response(status, headers, body)
  if status ~= 200 then
    bad_status = bad_status + 1
    if sample == "" then sample = "HTTP " .. status .. ": " .. string.sub(body, 1, 300) end
  elseif string.find(body, expect_tokens, 1, true) and string.find(body, expect_finish, 1, true)
      and string.find(body, expect_content, 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if sample == "" then sample = string.sub(body, 1, 400) end
  end
end
function done(summary, latency, requests)
  local o, b, s, smp = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); b = b + t:get("bad"); s = s + t:get("bad_status")
    if smp == "" then smp = t:get("sample") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"ok":%%d,"bad":%%d,"bad_status":%%d,"requests":%%d,"duration_us":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"timeout":%%d}\\n',
    o, b, s, summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    e.connect, e.read, e.write, e.timeout))
  io.write("BENCH_SAMPLE " .. string.gsub(smp, "\\n", " ") .. "\\n")
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for this ASCII text


_UNIQUE_REQUEST = """\
local prefix, suffix = %(prefix)s, %(suffix)s
local counter = 0
function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, prefix .. string.format("%%06d", counter %% 1000000) .. suffix)
end"""


def write_script(
    path: Path, body: dict[str, Any], content: str, max_tokens: int, unique: bool = False
) -> Path:
    """The Lua script; with ``unique`` every request carries its own counter (see workload.UNIQUE_TAG)."""
    body_json = json.dumps(body)
    request = ""
    if unique:
        prefix, suffix = workload.split_at_counter(body_json.encode())
        request = _UNIQUE_REQUEST % {
            "prefix": _lua_string(prefix.decode()),
            "suffix": _lua_string(suffix.decode()),
        }
    path.write_text(
        _LUA
        % {
            "request": request,
            "body": _lua_string(body_json),
            "content": _lua_string('"content":' + json.dumps(content)),
            "tokens": _lua_string(f'"completion_tokens":{max_tokens}'),
        }
    )
    return path


def command(url: str, script: Path, connections: int, seconds: int, timeout: float) -> list[str]:
    return [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={int(timeout)}s",
        "-s", str(script), url.rstrip("/") + "/v1/chat/completions",
    ]  # fmt: skip


def run_warmup(url: str, script: Path, connections: int, seconds: float, timeout: float) -> None:
    if seconds >= 1:
        subprocess.run(
            command(url, script, connections, round(seconds), timeout),
            capture_output=True,
            timeout=seconds + timeout + 30,
            check=False,
        )


def parse(output: str, max_tokens: int) -> dict[str, Any]:
    """wrk's output → the same report shape as bench/loadgen.py (latency percentiles precomputed)."""
    match = re.search(r"^BENCH_JSON (\{.*\})$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{output[-2000:]}")
    res = json.loads(match.group(1))
    sample = re.search(r"^BENCH_SAMPLE (.*)$", output, re.MULTILINE)
    socket_errors = {k: res[k] for k in ("connect", "read", "write", "timeout") if res[k]}
    kinds = {k: v for k, v in (("bad_body", res["bad"]), ("http_not_200", res["bad_status"])) if v}
    kinds |= socket_errors
    return {
        "ok": res["ok"],
        "errors": res["bad"] + res["bad_status"] + sum(socket_errors.values()),
        "completion_tokens": res["ok"] * max_tokens,
        "sse_events": 0,
        "latencies_ms": [],
        "ttfts_ms": [],
        "latency_p50_ms": res["p50_us"] / 1000,
        "latency_p90_ms": res["p90_us"] / 1000,
        "wrk_seconds": res["duration_us"] / 1e6,
        "warmup_ok": -1,  # not counted separately
        "connections": None,
        "error_kinds": kinds,
        "error_samples": [sample.group(1)] if kinds and sample and sample.group(1) else [],
    }
