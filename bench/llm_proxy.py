#!/usr/bin/env python3
"""Helpers of bench/llm_proxy.sh (Python standard library only). See bench/README.md.

  wait URL PID                 until URL answers 200 (exits 1 if process PID ends first)
  ttfb --direct URL --proxied URL --tag T --n N --out F
                               time to the first SSE event of N streaming requests on each
                               path, alternating, one keep-alive connection per path; every
                               request distinct (a real miss through the proxy)
  report --raw DIR --meta F --out TXT --json J
                               builds the summary from the raw files of a run; exit 1 when a
                               goal is missed
"""

import argparse
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy


# --- wait ----------------------------------------------------------------------------------
def cmd_wait(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:  # an exited process stays a zombie until bash reaps it: look at its state
            with open(f"/proc/{args.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        if state in ("Z", "X", "gone"):
            print(f"process {args.pid} exited during start-up", file=sys.stderr)
            return 1
        try:
            with OPENER.open(args.url, timeout=2) as r:
                if r.status == 200:
                    return 0
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.1)
    print(f"no 200 from {args.url} within {args.timeout} s", file=sys.stderr)
    return 1


# --- ttfb ----------------------------------------------------------------------------------
def first_event_ms(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict):
    """Sends one streaming request; milliseconds until the first `data:` line arrives, and
    the answer's x-groundwork-cache. The rest of the stream is read (and thrown away) so the
    connection can be reused."""
    started = time.perf_counter()
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"{path}: status {resp.status}")
    seen = b""
    while b"data:" not in seen:
        chunk = resp.read1(65536)
        if not chunk:
            raise RuntimeError(f"{path}: stream ended before its first event")
        seen += chunk
    elapsed = (time.perf_counter() - started) * 1000
    resp.read()
    return elapsed, resp.getheader("x-groundwork-cache")


def pct(values: list, q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def cmd_ttfb(args: argparse.Namespace) -> int:
    # Every request distinct (temperature 0, no bypass header): through the proxy each one is
    # a real streaming MISS, recorded as it passes.
    def body(name: str, i: int) -> bytes:
        return json.dumps({"model": "m", "temperature": 0, "stream": True,
                           "messages": [{"role": "user",
                                         "content": f"ttfb {args.tag} {name} {i}"}]}).encode()
    headers = {"content-type": "application/json"}
    paths = {}
    for name, url in (("direct", args.direct), ("proxied", args.proxied)):
        u = urllib.parse.urlsplit(url)
        paths[name] = (http.client.HTTPConnection(u.hostname, u.port, timeout=30), u.path)
    times = {"direct": [], "proxied": []}
    cache = {"direct": {}, "proxied": {}}
    for i in range(args.warmup + args.n):
        order = ("direct", "proxied") if i % 2 == 0 else ("proxied", "direct")
        for name in order:
            conn, path = paths[name]
            ms, status = first_event_ms(conn, path, body(name, i), headers)
            if i >= args.warmup:
                times[name].append(ms)
                cache[name][status or "none"] = cache[name].get(status or "none", 0) + 1
    out = {name: {"n": len(v), "p50_ms": pct(v, 50), "p90_ms": pct(v, 90), "p99_ms": pct(v, 99),
                  "max_ms": max(v), "x_groundwork_cache": cache[name]}
           for name, v in times.items()}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    return 0


# --- report --------------------------------------------------------------------------------
def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return default


def oha_figures(path: str) -> dict:
    oha = load(path, {})
    if not oha:
        return {"missing": True}
    pct = oha.get("latencyPercentiles", {})
    ms = {k: (v * 1000 if v is not None else None) for k, v in pct.items()}
    codes = {k: v for k, v in oha.get("statusCodeDistribution", {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= int(k) < 300)
    responses = sum(codes.values())
    # -w waits for the requests in flight at the deadline; should one still be cut off,
    # it is the run's end, not the server's failure (the other scripts do the same).
    errors = {k: v for k, v in oha.get("errorDistribution", {}).items()
              if "deadline" not in k.lower()}
    cut = sum(v for k, v in oha.get("errorDistribution", {}).items() if "deadline" in k.lower())
    s = oha.get("summary", {})
    return {
        "p50_ms": ms.get("p50"), "p90_ms": ms.get("p90"), "p99_ms": ms.get("p99"),
        "p99.9_ms": ms.get("p99.9"),
        "max_ms": (s.get("slowest") or 0) * 1000, "mean_ms": (s.get("average") or 0) * 1000,
        "achieved_rps": s.get("requestsPerSec", 0.0), "responses": responses, "ok": ok,
        "non_2xx": responses - ok, "status": codes, "errors": errors,
        "no_response": sum(errors.values()), "cut_at_deadline": cut,
        "bytes_per_response": s.get("sizePerRequest"),
        # Only from loadgen (oha does not keep it): the x-groundwork-cache of each answer.
        "cache_headers": oha.get("cacheHeaderDistribution"),
    }


def delta(after: dict, before: dict, *path) -> int:
    def get(d):
        for p in path:
            d = (d or {}).get(p)
        return d or 0
    return get(after) - get(before)


def fmt_ms(v, signed=False):
    if v is None:
        return "n/a"
    return f"{v:+.2f} ms" if signed else f"{v:.2f} ms"


def window_extras(raw: str, name: str) -> dict:
    before = load(os.path.join(raw, f"{name}.stats-before.json"), {})
    after = load(os.path.join(raw, f"{name}.stats-after.json"), {})
    mock = load(os.path.join(raw, f"{name}.mock.json"), {})
    redis = load(os.path.join(raw, f"{name}.redis.json"), {})
    conns = load(os.path.join(raw, f"{name}.conns.json"))
    out = {}
    if before and after:
        out["gateway"] = {k: delta(after, before, "gateway", k)
                          for k in ("hits", "misses", "bypasses", "upstream_calls", "coalesced",
                                    "not_stored")}
        out["cache"] = {k: delta(after, before, "cache", k)
                        for k in ("hits_memory", "hits_redis", "misses", "stores",
                                  "redis_errors", "redis_writes", "redis_writes_dropped")}
        out["client"] = {k: delta(after, before, "client", k)
                         for k in ("calls", "attempts", "retries", "rejected", "errors_4xx",
                                   "errors_429", "errors_5xx", "errors_transport",
                                   "errors_timeout")}
    if isinstance(mock.get("before"), int) and isinstance(mock.get("after"), int):
        # Each probe is one call of its own (the later one), hence the - 1.
        out["mock_calls"] = mock["after"] - mock["before"] - 1
    if isinstance(redis.get("before"), int) and isinstance(redis.get("after"), int):
        out["redis_gets"] = redis["after"] - redis["before"]
    if conns and isinstance(conns.get("before"), dict) and isinstance(conns.get("after"), dict):
        # The mock's own counts of the connections that carried chat calls (GET
        # /mock/connections): open, most open at once since the reset, closed.
        b, a = conns["before"], conns["after"]
        opened = (a["open"] - b["open"]) + (a["closed"] - b["closed"])
        out["conns"] = {"peak": a["peak_open"], "open_at_start": b["open"], "opened": opened,
                        "distinct": b["open"] + opened, "closed": a["closed"] - b["closed"],
                        "open_at_end": a["open"]}
    cpu = load(os.path.join(raw, f"{name}.cpu.json"), {})
    if cpu.get("before") and cpu.get("after"):
        # "cpu user nice system idle iowait irq softirq steal guest guest_nice", in ticks.
        before = [int(v) for v in cpu["before"].split()[1:9]]
        after = [int(v) for v in cpu["after"].split()[1:9]]
        d = [x - y for x, y in zip(after, before)]
        total = sum(d)
        wall = cpu.get("after_wall_s", 0) - cpu.get("before_wall_s", 0)
        if wall > 0 and cpu.get("cpus") and cpu.get("ticks_per_s"):
            # Idle and steal are accounted exactly; user and system time are sampled at timer
            # ticks, which a tickless kernel stops while idle, so their sum under-reads short
            # bursts of work: the wall clock is the total.
            total = wall * cpu["cpus"] * cpu["ticks_per_s"]
        if total > 0:
            out["cpu"] = {"busy_pct": max(0.0, 100.0 * (total - d[3] - d[4] - d[7]) / total),
                          "steal_pct": 100.0 * d[7] / total}
    server = load(os.path.join(raw, f"{name}.server-cpu.json"), {})
    if isinstance(server.get("before"), int) and isinstance(server.get("after"), int):
        out["server_cpu_s"] = (server["after"] - server["before"]) / server.get("ticks_per_s", 100)
    return out


def server_cpu_line(x: dict) -> str:
    cpu_s, answered = x.get("server_cpu_s"), x.get("responses") or 0
    if cpu_s is None or not answered:
        return "          server CPU (user + system): not recorded"
    return (f"          server CPU (user + system): {cpu_s:.2f} s for {answered} answers, "
            f"{cpu_s / answered * 1e6:.0f} µs per answer")


# Above this share of CPU time taken by the hypervisor, a window measures the host.
STEAL_WARN_PCT = 5.0


def cpu_line(x: dict) -> str:
    c = x.get("cpu")
    if not c:
        return "          CPU during the window: not recorded"
    warn = (f"  <- HOST STEAL above {STEAL_WARN_PCT:g}%: this window measures the host, "
            f"not the proxy; run again") if c["steal_pct"] > STEAL_WARN_PCT else ""
    return (f"          CPU during the window: busy {c['busy_pct']:.0f}%, "
            f"taken by the hypervisor (steal) {c['steal_pct']:.1f}%{warn}")


def cmd_report(args: argparse.Namespace) -> int:
    meta = load(args.meta)
    raw = args.raw
    pool = meta.get("pool_max_idle_per_host") or 30
    lines, checks = [], []

    def check(ok: bool, text: str):
        checks.append({"ok": bool(ok), "check": text})

    w = {}
    for win in meta["windows"]:
        w[win["name"]] = {**win, **oha_figures(os.path.join(raw, f"{win['name']}.oha.json")),
                          **window_extras(raw, win["name"])}

    bar = "=" * 94
    lines.append(f"{'=' * 20} groundwork: LLM proxy, POST /v1/chat/completions {'=' * 24}")
    lines.append(f"run {meta['stamp']}, commit {meta['commit']}{' (dirty tree)' if meta['dirty'] else ''}, "
                 f"nproc {meta['nproc']}, oha {meta['oha_version']}, Redis {meta['redis_version']}")
    lines.append(f"server {meta['server_bin']} (built {meta['server_built']})")
    lines.append(f"mock   {meta['mock_bin']} (built {meta['mock_built']}), --latency-ms "
                 f"{meta['mock_latency_ms']}, {meta['mock_threads']}")
    lines.append(f"ONE machine, {meta['nproc']} cores shared by the load generators (loadgen, oha), the proxy, "
                 f"the mock upstream and Redis: a lower bound, noisy; loopback only.")
    lines.append(f"load: -q RATE -z {meta['duration']}s -c {meta['connections']}, latency from each "
                 f"request's scheduled start, keep-alive; {meta['warmup']} s warm-up at the same rate "
                 f"discarded before each window; body {meta['body_bytes']} bytes, temperature 0")
    lines.append("  misses (1.): loadgen (one thread), open loop, a distinct body per request, no cache "
                 "header; hits (2.): oha --latency-correction -w, the same body every time")
    lines.append("  mock delays kept to the tens of microseconds (a timer thread, not Tokio's 1 ms ticks)")
    lines.append("")

    hc = meta.get("header_check", {})
    lines.append(f"x-groundwork-cache check (curl, before the load): "
                 f"{'as expected' if hc.get('ok') else 'NOT as expected'}")
    for row in hc.get("rows", []):
        lines.append(f"  {row}")
    check(hc.get("ok"), "x-groundwork-cache headers as expected (MISS, HIT, BYPASS; HIT from Redis on B)")
    lines.append("")

    # 1. miss overhead
    lines.append(f"1. MISS OVERHEAD: mock answers after {meta['mock_latency_ms']} ms; (a) load -> mock directly, "
                 f"(b) load -> groundwork A -> mock; every request a distinct deterministic chat request "
                 f"(temperature 0, no x-groundwork-cache header): a real MISS, looked up, sent upstream and stored")
    lines.append(f"  {'rate':>6}  {'path':<9} {'achieved':>9} {'p50':>10} {'p90':>10} {'p99':>10} "
                 f"{'p99.9':>10} {'max':>10} {'non-2xx':>8} {'no answer':>9}")
    for rate in meta["rates"]:
        a, b = w.get(f"direct-{rate}", {}), w.get(f"proxied-{rate}", {})
        for label, x in (("(a) direct", a), ("(b) proxy", b)):
            if x.get("missing"):
                lines.append(f"  {rate:>4}/s  {label:<9} no oha results")
                continue
            lines.append(f"  {rate:>4}/s  {label:<9} {x['achieved_rps']:>7.0f}/s {fmt_ms(x['p50_ms']):>10} "
                         f"{fmt_ms(x['p90_ms']):>10} {fmt_ms(x['p99_ms']):>10} {fmt_ms(x['p99.9_ms']):>10} "
                         f"{fmt_ms(x['max_ms']):>10} {x['non_2xx']:>8} {x['no_response']:>9}")
        if a.get("missing") or b.get("missing"):
            check(False, f"{rate}/s: both windows measured")
            continue
        for label, x in (("(a)", a), ("(b)", b)):
            lines.append(cpu_line(x).replace("CPU during the window", f"CPU during {label}"))
        lines.append(server_cpu_line(b).replace("server CPU", "server A's CPU in (b)"))
        add50, add99 = b["p50_ms"] - a["p50_ms"], b["p99_ms"] - a["p99_ms"]
        lines.append(f"  {rate:>4}/s  ADDED (b - a): p50 {fmt_ms(add50, True)}, p99 {fmt_ms(add99, True)}, "
                     f"p99.9 {fmt_ms(b['p99.9_ms'] - a['p99.9_ms'], True)}, mean {fmt_ms(b['mean_ms'] - a['mean_ms'], True)}"
                     f"   (differences of the percentiles, not percentiles of the differences)")
        g, c = b.get("gateway", {}), b.get("conns", {})
        lines.append(f"          upstream in (b): {g.get('upstream_calls', 'n/a')} calls (gateway), "
                     f"{b.get('mock_calls', 'n/a')} (mock's counter), {b['responses']} responses to oha; "
                     f"mix HIT {g.get('hits', 'n/a')} / MISS {g.get('misses', 'n/a')} / BYPASS {g.get('bypasses', 'n/a')}; "
                     f"client errors {sum(v for k, v in b.get('client', {}).items() if k.startswith('errors') or k == 'rejected')}, "
                     f"retries {b.get('client', {}).get('retries', 'n/a')}")
        if c:
            lines.append(f"          upstream TCP connections (counted by the mock): most open at once {c['peak']}, "
                         f"used {c['distinct']} ({c['open_at_start']} open at the start + {c['opened']} opened), "
                         f"closed in the window {c['closed']}; pool keeps {pool} idle per host")
        errs = a["non_2xx"] + a["no_response"] + b["non_2xx"] + b["no_response"]
        check(errs == 0, f"{rate}/s: 0 errors (non-2xx or no answer), direct and proxied (got {errs})")
        headers = b.get("cache_headers") or {}
        lines.append(f"          x-groundwork-cache of the answers in (b): {headers or 'n/a'}")
        check(b["responses"] > 0 and headers.get("MISS") == b["responses"]
              and g.get("misses") == b["responses"] and not g.get("hits") and not g.get("bypasses")
              and g.get("upstream_calls") == b["responses"],
              f"{rate}/s: every proxied answer a real MISS with its own upstream call "
              f"(MISS headers {headers.get('MISS')}, gateway misses {g.get('misses')} / hits {g.get('hits')} / "
              f"bypasses {g.get('bypasses')} / upstream calls {g.get('upstream_calls')}, of {b['responses']})")
        check(add50 <= 0.5, f"{rate}/s: added p50 <= 0.5 ms (got {add50:+.3f} ms)")
        check(add99 <= 2.0, f"{rate}/s: added p99 <= 2 ms (got {add99:+.3f} ms)")
        if c:
            check(c["peak"] <= pool and c["distinct"] <= pool,
                  f"{rate}/s: upstream connections <= pool size {pool} (peak {c['peak']}, distinct {c['distinct']})")
        else:
            check(False, f"{rate}/s: upstream connections counted (GET /mock/connections)")
    lines.append("")

    # 2. hits
    lines.append(f"2. CACHE HITS at {meta['hit_rate']}/s, the same body every time (cached before the window)")
    lines.append(f"  {'level':<44} {'achieved':>9} {'p50':>10} {'p90':>10} {'p99':>10} "
                 f"{'p99.9':>10} {'max':>10} {'non-2xx':>8} {'no answer':>9}")
    goals = {"hits-memory": 1.0, "hits-redis": 3.0}
    for name, label in (("hits-memory", "memory (A, 256 MB in memory)"),
                        ("hits-redis", "Redis (B, GROUNDWORK_LLM_CACHE_MEMORY_MB=0)")):
        x = w.get(name, {})
        if not x or x.get("missing"):
            lines.append(f"  {label:<44} no oha results")
            check(False, f"{name}: measured")
            continue
        lines.append(f"  {label:<44} {x['achieved_rps']:>7.0f}/s {fmt_ms(x['p50_ms']):>10} {fmt_ms(x['p90_ms']):>10} "
                     f"{fmt_ms(x['p99_ms']):>10} {fmt_ms(x['p99.9_ms']):>10} {fmt_ms(x['max_ms']):>10} "
                     f"{x['non_2xx']:>8} {x['no_response']:>9}")
        lines.append(cpu_line(x).replace("          ", "    ", 1))
        lines.append(server_cpu_line(x).replace("          ", "    ", 1))
        g, cache = x.get("gateway", {}), x.get("cache", {})
        up = g.get("upstream_calls")
        lines.append(f"    x-groundwork-cache mix (server counters): HIT {g.get('hits', 'n/a')} / "
                     f"MISS {g.get('misses', 'n/a')} / BYPASS {g.get('bypasses', 'n/a')} of {x['responses']} responses; "
                     f"upstream calls: {up if up is not None else 'n/a'} (gateway), {x.get('mock_calls', 'n/a')} (mock's counter)")
        lines.append(f"    hits served from: memory {cache.get('hits_memory', 'n/a')}, Redis {cache.get('hits_redis', 'n/a')}"
                     f"; Redis GET commands in the window "
                     f"(whole Redis server): {x.get('redis_gets', 'n/a')}; Redis read errors {cache.get('redis_errors', 'n/a')}")
        errs = x["non_2xx"] + x["no_response"]
        check(errs == 0, f"{name}: 0 errors (got {errs})")
        check(x["p99_ms"] < goals[name], f"{name}: p99 < {goals[name]:g} ms (got {x['p99_ms']:.3f} ms)")
        check(up == 0 and x.get("mock_calls") == 0,
              f"{name}: 0 upstream calls (gateway {up}, mock {x.get('mock_calls')})")
        check(g.get("hits") == x["responses"] and x["responses"] > 0,
              f"{name}: every answer a HIT ({g.get('hits')} of {x['responses']})")
        if name == "hits-redis":
            check(cache.get("hits_memory") == 0 and (cache.get("hits_redis") or 0) > 0,
                  f"hits-redis: every hit from Redis, none from B's 1-byte memory level "
                  f"(memory {cache.get('hits_memory')}, Redis {cache.get('hits_redis')})")
    lines.append("")
    t = load(os.path.join(raw, "ttfb.json"))
    lines.append("3. STREAMING MISS, time to the first SSE event (closed loop, one request at a time, "
                 "direct and proxied alternating, every request distinct: a real MISS through the proxy)")
    if t and "direct" in t and "proxied" in t:
        a, b = t["direct"], t["proxied"]
        for label, x in (("(a) direct", a), ("(b) proxy", b)):
            lines.append(f"  {label:<12} n {x['n']:>5}  p50 {fmt_ms(x['p50_ms']):>10}  p90 {fmt_ms(x['p90_ms']):>10}  "
                         f"p99 {fmt_ms(x['p99_ms']):>10}  max {fmt_ms(x['max_ms']):>10}")
        add50, add99 = b["p50_ms"] - a["p50_ms"], b["p99_ms"] - a["p99_ms"]
        t["added_p50_ms"], t["added_p99_ms"] = add50, add99
        lines.append(f"  ADDED (b - a): p50 {fmt_ms(add50, True)}, p99 {fmt_ms(add99, True)}")
        marks = b.get("x_groundwork_cache") or {}
        lines.append(f"  x-groundwork-cache of the proxied answers: {marks or 'n/a'}")
        lines.append(cpu_line(window_extras(raw, "ttfb")).replace("          ", "  ", 1))
        check(add50 <= 1.0, f"streaming: added time to first event p50 <= 1 ms (got {add50:+.3f} ms; "
                            f"p99 added {add99:+.3f} ms, reported, no goal)")
        check(marks.get("MISS") == b["n"] and b["n"] > 0,
              f"streaming: every proxied stream a real MISS ({marks.get('MISS')} of {b['n']})")
    else:
        lines.append("  not measured")
        check(False, "streaming: time to first event measured")
    lines.append("")
    lines.append("4. Redis black-holed: not measured here (covered by the Redis level tests).")
    lines.append("")
    failed = [c for c in checks if not c["ok"]]
    lines.append("checks (goals):")
    for c in checks:
        lines.append(f"  [{'PASS' if c['ok'] else 'MISS'}] {c['check']}")
    lines.append(f"{len(checks) - len(failed)} of {len(checks)} checks hold" +
                 (f"; {len(failed)} MISSED" if failed else ""))
    lines.append(f"raw data: {raw}")
    lines.append(bar)
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "windows": w, "ttfb": t, "checks": checks}, f, indent=2)
    sys.stdout.write(text)
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("wait")
    s.add_argument("url")
    s.add_argument("pid", type=int)
    s.add_argument("--timeout", type=float, default=60)
    s = sub.add_parser("ttfb")
    s.add_argument("--direct", required=True)
    s.add_argument("--proxied", required=True)
    s.add_argument("--tag", required=True)
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--warmup", type=int, default=50)
    s.add_argument("--out", required=True)
    s = sub.add_parser("report")
    s.add_argument("--raw", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--json", required=True)
    args = p.parse_args()
    return {"wait": cmd_wait, "ttfb": cmd_ttfb,
            "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
