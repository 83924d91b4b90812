#!/usr/bin/env python3
"""Helpers of bench/outage.sh: poll /ready, wait for it, and report the outage figures.

Python 3.8+ standard library only (sqlite3 reads oha's per-request database).

  outage.py poll READY_URL OUT.tsv [--infra INFRA_URL] [--interval 0.05] [--timeout 2]
      GET READY_URL (then INFRA_URL, /api/v1/infra) every INTERVAL seconds (start to start)
      until SIGTERM/SIGINT; one tab-separated line per poll:
      sent_epoch received_epoch ready_status(0: no answer) ready_latency_ms ready_db_check
      infra_db_ready db_breaker_state redis_connected(1/0) redis_breaker_state   ("-": unknown)
  outage.py wait-ready POLL.tsv AFTER_EPOCH [--what ready|redis] [--timeout 60]
      wait until POLL.tsv has, received after AFTER_EPOCH, a /ready 200 (ready) or a poll
      where the server's Redis client is connected again (redis; /ready 200 when the server
      reports no Redis figures); print that poll's received epoch. Exit 1 on timeout.
  outage.py report --raw DIR --meta META.json --out SUMMARY.txt --json SUMMARY.json
      read DIR/events.tsv, DIR/ready.tsv, DIR/oha-<endpoint>.{json,sqlite}; print the summary,
      write it to SUMMARY.txt and the figures to SUMMARY.json. Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import sqlite3
import sys
import time
import urllib.parse

# --------------------------------------------------------------------------------------------
# poll


def _get(conn, host, port, path, timeout):
    """GET path on a keep-alive connection (opened when None); returns (conn, status or 0,
    decoded JSON or None)."""
    try:
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request("GET", path, headers={"accept": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.will_close:
            conn.close()
            conn = None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        return conn, resp.status, doc
    except (OSError, http.client.HTTPException):
        if conn is not None:
            conn.close()
        return None, 0, None


def _dig(doc, *keys) -> str:
    for k in keys:
        if not isinstance(doc, dict) or k not in doc:
            return "-"
        doc = doc[k]
    if isinstance(doc, bool):
        return "1" if doc else "0"
    return "-" if doc is None else str(doc)


def cmd_poll(args: argparse.Namespace) -> int:
    url = urllib.parse.urlsplit(args.url)
    host, port, path = url.hostname, url.port or 80, url.path or "/"
    infra_path = urllib.parse.urlsplit(args.infra).path if args.infra else None
    stop = False

    def on_signal(_signo, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    conn = None
    with open(args.out, "a", buffering=1) as out:
        next_at = time.time()
        while not stop:
            sent = time.time()
            conn, status, doc = _get(conn, host, port, path, args.timeout)
            received = time.time()
            db = _dig(doc, "checks", "database", "status")
            infra = ["-"] * 4
            if infra_path:
                conn, _st, idoc = _get(conn, host, port, infra_path, args.timeout)
                infra = [_dig(idoc, "database", "ready"), _dig(idoc, "database", "breaker", "state"),
                         _dig(idoc, "redis", "connected"), _dig(idoc, "redis", "breaker", "state")]
            out.write("\t".join([f"{sent:.6f}", f"{received:.6f}", str(status),
                                 f"{(received - sent) * 1000:.3f}", db, *infra]) + "\n")
            next_at += args.interval
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)
            else:  # fell behind (a slow answer): poll again at once, do not burst to catch up
                next_at = time.time()
    return 0


POLL_FIELDS = ("sent", "received", "status", "latency_ms", "db_check", "db_ready", "db_breaker",
               "redis_connected", "redis_breaker")


def read_polls(path: str) -> list[dict]:
    """The poller's lines as dicts (see POLL_FIELDS); a line being written is skipped."""
    polls = []
    try:
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) != len(POLL_FIELDS):
                    continue
                p = dict(zip(POLL_FIELDS, parts))
                p["sent"], p["received"] = float(p["sent"]), float(p["received"])
                p["status"], p["latency_ms"] = int(p["status"]), float(p["latency_ms"])
                polls.append(p)
    except FileNotFoundError:
        pass
    return polls


def recovered(p: dict, what: str) -> bool:
    """Is the poll `p` a sign that the server has recovered from a `what` outage?"""
    if what == "redis" and p["redis_connected"] != "-":
        return p["redis_connected"] == "1"
    return p["status"] == 200


def cmd_wait_ready(args: argparse.Namespace) -> int:
    deadline = time.time() + args.timeout
    while True:
        for p in read_polls(args.polls):
            if p["received"] >= args.after and recovered(p, args.what):
                print(f"{p['received']:.6f}")
                return 0
        if time.time() > deadline:
            print(f"outage.py: no sign of recovery ({args.what}) within {args.timeout} s",
                  file=sys.stderr)
            return 1
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# report


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    if v >= 100:
        return f"{v:.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def read_events(path: str) -> dict[str, float]:
    events = {}
    with open(path) as f:
        for line in f:
            name, _, value = line.strip().partition("\t")
            if name:
                events[name] = float(value)
    return events


def load_requests(db_path: str, anchor: float) -> list[tuple[float, float, int]]:
    """(scheduled epoch, latency ms, status) of every request that got an answer, from oha's
    --db-url database. oha's times are seconds since its start instant; `anchor` is the epoch
    the script launched oha at (its start instant follows within milliseconds)."""
    if not os.path.exists(db_path):
        return []
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT COALESCE(start_latency_correction, start), duration, status FROM oha"
        ).fetchall()
    finally:
        conn.close()
    return sorted((anchor + s, d * 1000.0, int(st)) for s, d, st in rows)


def window_stats(reqs, lo: float, hi: float) -> dict:
    sel = [r for r in reqs if lo <= r[0] < hi]
    lat = sorted(r[1] for r in sel)
    codes: dict[str, int] = {}
    for r in sel:
        codes[str(r[2])] = codes.get(str(r[2]), 0) + 1
    lat_ok = sorted(r[1] for r in sel if r[2] == 200)
    lat_bad = sorted(r[1] for r in sel if r[2] != 200)
    span = max(hi - lo, 1e-9)
    return {
        "start": lo, "end": hi, "span_s": round(hi - lo, 3),
        "requests": len(sel), "rps": round(len(sel) / span, 1),
        "status": dict(sorted(codes.items())),
        "non_200": sum(v for k, v in codes.items() if k != "200"),
        "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "max_ms": lat[-1] if lat else None,
        "p50_ms_200": percentile(lat_ok, 50), "p99_ms_200": percentile(lat_ok, 99),
        "p50_ms_non_200": percentile(lat_bad, 50), "p99_ms_non_200": percentile(lat_bad, 99),
    }


def cmd_report(args: argparse.Namespace) -> int:
    with open(args.meta) as f:
        meta = json.load(f)
    raw = args.raw
    ev = read_events(os.path.join(raw, "events.tsv"))
    polls = read_polls(os.path.join(raw, "ready.tsv"))
    endpoints = meta["endpoints"]  # [{"name", "label", "expect"}]

    reqs, totals = {}, {}
    for ep in endpoints:
        name = ep["name"]
        anchor = ev.get(f"load_start_{name}", ev.get("load_start", 0.0))
        reqs[name] = load_requests(os.path.join(raw, f"oha-{name}.sqlite"), anchor)
        try:
            with open(os.path.join(raw, f"oha-{name}.json")) as f:
                oha = json.load(f)
        except (FileNotFoundError, ValueError):
            oha = {}
        errors = {k: v for k, v in oha.get("errorDistribution", {}).items()
                  if "deadline" not in k.lower()}  # cut off by the end of the run: not the server's
        codes = oha.get("statusCodeDistribution", {})
        totals[name] = {
            "responses": sum(codes.values()), "status": dict(sorted(codes.items())),
            "no_response": sum(errors.values()), "errors": errors,
            "achieved_rps": round(oha.get("summary", {}).get("requestsPerSec", 0.0), 1),
        }

    load_start = min(ev.get(f"load_start_{ep['name']}", math.inf) for ep in endpoints)
    load_end = ev.get("load_end", load_start + meta["load_seconds"])
    load_end = min(load_end, load_start + meta["load_seconds"])

    outages = []
    services = [s for s in meta["services"] if f"{s}_stop_begin" in ev]
    for i, svc in enumerate(services):
        stop_begin = ev[f"{svc}_stop_begin"]
        down = ev.get(f"{svc}_down")
        start_begin = ev.get(f"{svc}_start_begin")
        back = ev.get(f"{svc}_back")
        ready = ev.get(f"{svc}_ready")
        # "before": the pre_seconds before the stop was issued, not earlier than the load
        # start or the previous outage's recovery (it overlaps that outage's "after").
        prev_ready = (outages[-1]["ready"] or outages[-1]["back"]) if outages else None
        prev_end = max(load_start, prev_ready or load_start, stop_begin - meta["pre_seconds"])
        nxt = services[i + 1] if i + 1 < len(services) else None
        after_end = ev.get(f"{nxt}_stop_begin", load_end) if nxt else load_end
        # The poller's view: /ready, and the server's own figures from /api/v1/infra.
        def first(pred, lo, hi=math.inf):
            return next((p for p in polls if lo <= p["received"] <= hi and pred(p)), None)

        horizon = after_end
        ready_back = first(lambda p: p["status"] == 200, back) if back else None
        first_bad = first(lambda p: p["status"] != 200, stop_begin,
                          ready_back["received"] if ready_back else horizon)
        span_hi = ready_back["received"] if ready_back else horizon
        in_outage = [p for p in polls if stop_begin <= p["received"] <= span_hi]
        if svc == "postgres":
            lost = first(lambda p: p["db_breaker"] not in ("closed", "-"), stop_begin, back or horizon)
            regained = first(lambda p: p["db_breaker"] == "closed", back) if (back and lost) else None
        else:
            lost = first(lambda p: p["redis_connected"] == "0", stop_begin, back or horizon)
            regained = first(lambda p: p["redis_connected"] == "1", back) if (back and lost) else None
        o = {
            "service": svc,
            "stop_begin": stop_begin, "down": down, "start_begin": start_begin, "back": back,
            "ready": ready,
            "stop_took_s": (down - stop_begin) if down else None,
            "down_for_s": (back - stop_begin) if back else None,
            "start_to_back_s": (back - start_begin) if (back and start_begin) else None,
            # The recovery time: /ready 200 (postgres) or the server's Redis client connected
            # again (redis), after the service accepted connections.
            "back_to_ready_s": (ready - back) if (ready and back) else None,
            "ready_went_non_200": first_bad is not None,
            "ready_first_non_200_after_stop_s": (first_bad["received"] - stop_begin) if first_bad else None,
            "ready_200_after_back_s": (ready_back["received"] - back) if ready_back else None,
            "ready_non_200_for_s": (ready_back["received"] - first_bad["received"])
            if (first_bad and ready_back) else None,
            "ready_polls": len(in_outage),
            "ready_polls_non_200": sum(1 for p in in_outage if p["status"] != 200),
            "ready_max_latency_ms": max((p["latency_ms"] for p in in_outage), default=None),
            "server_lost_after_stop_s": (lost["received"] - stop_begin) if lost else None,
            "server_lost_state": (lost["db_breaker"] if svc == "postgres" else "disconnected") if lost else None,
            "server_regained_after_back_s": (regained["received"] - back) if regained else None,
            "windows": {},
        }
        # Windows by each request's scheduled time: before (since the previous outage's
        # "after" or the load start), down (stop issued .. service accepts connections),
        # recovering (service back .. /ready 200), after (.. next outage or end of load).
        bounds = {
            "before": (prev_end, stop_begin),
            "down": (stop_begin, back or after_end),
            "recovering": (back or after_end, ready or back or after_end),
            "after": (ready or back or after_end, after_end),
        }
        for wname, (lo, hi) in bounds.items():
            o["windows"][wname] = {"start": lo, "end": hi,
                                   "by_endpoint": {ep["name"]: window_stats(reqs[ep["name"]], lo, hi)
                                                   for ep in endpoints}}
        outages.append(o)

    # ---- checks --------------------------------------------------------------------------------
    checks = []  # (ok, text)
    max_ready_s = meta["max_back_to_ready_s"]
    for o in outages:
        svc = o["service"]
        if o["back"] is None:
            checks.append((False, f"{svc}: never came back within the script's wait"))
            continue
        what = "/ready 200" if svc == "postgres" else "server's Redis client connected"
        if o["ready"] is None:
            checks.append((False, f"{svc}: no {what} after the service came back"))
        else:
            checks.append((o["back_to_ready_s"] <= max_ready_s,
                           f"{svc}: {what} {o['back_to_ready_s']:.2f} s after the service was back "
                           f"(limit {max_ready_s} s)"))
        if svc == "postgres":
            checks.append((o["ready_went_non_200"], f"{svc}: /ready answered non-200 while it was down"))
        for ep in endpoints:
            name = ep["name"]
            w = {k: o["windows"][k]["by_endpoint"][name] for k in o["windows"]}
            if ep["expect"] == "cached":
                bad = sum(w[k]["non_200"] for k in w)
                checks.append((bad == 0, f"{svc}: {ep['label']}: {bad} non-200 answers around the outage"))
            else:
                bad_after = w["after"]["non_200"]
                checks.append((bad_after == 0,
                               f"{svc}: {ep['label']}: {bad_after} non-200 answers in the 'after' window"))
                if svc == "postgres":
                    codes = w["down"]["status"]
                    other = {k: v for k, v in codes.items() if k not in ("503",)}
                    ok503 = codes.get("503", 0)
                    # The first requests of the outage can still be answered (stop in progress).
                    checks.append((ok503 > 0 and sum(v for k, v in other.items() if k != "200") == 0,
                                   f"{svc}: {ep['label']}: while down {codes} (503 expected)"))
    for ep in endpoints:
        t = totals[ep["name"]]
        if ep["expect"] == "cached":
            checks.append((t["no_response"] == 0,
                           f"{ep['label']}: {t['no_response']} requests without an answer over the run"))

    result = {"meta": meta, "events": ev, "totals": totals, "outages": outages,
              "checks": [{"ok": ok, "text": text} for ok, text in checks]}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    # ---- text ----------------------------------------------------------------------------------
    lines = []
    add = lines.append
    bar = "=" * 100
    add(f"{'=' * 20} groundwork: PostgreSQL and Redis outages under load {'=' * 27}")
    add(f"run {meta['stamp']}: commit {meta['commit']}{' (dirty tree)' if meta['dirty'] else ''}, "
        f"nproc {meta['nproc']}, oha {meta['oha_version']}, PostgreSQL {meta['pg_version']}, "
        f"Redis {meta['redis_version']}")
    add(f"server {meta['server_bin']} (built {meta['server_built']}), "
        f"query timeout {meta['query_timeout_ms']} ms")
    add(f"database {meta['database_url']}, Redis {meta['redis_url']}; "
        f"seeded {meta['seed'].get('agents')} agents x {meta['seed'].get('attachments', 0) // max(meta['seed'].get('agents', 1), 1)} tools")
    add(f"load: open loop, latency corrected, {meta['load_seconds']} s, uniformly random agent 1..{meta['agents']}:")
    for ep in endpoints:
        t = totals[ep["name"]]
        add(f"  {ep['label']:<36} {ep['rate']:>5}/s target, achieved {t['achieved_rps']:.0f}/s, "
            f"{ep['connections']} conns, per-request timeout {meta['request_timeout_s']} s")
    add(f"outages: {meta['outage_seconds']} s each (stop, wait, start); /ready polled every "
        f"{int(meta['poll_interval_s'] * 1000)} ms, then /api/v1/infra ({len(polls)} polls);")
    add("  service 'back' = first pg_isready ok / PONG, probed every 50 ms; requests are put in windows")
    add("  by their scheduled send time: before (up to the stop), down (stop issued .. back),")
    add("  recovering (back .. recovered), after (.. next outage or end of load)")
    for o in outages:
        svc = o["service"]
        add("")
        add(f"--- {svc}: {meta['commands'][svc]}")
        add(f"  stop took {fmt_s(o['stop_took_s'])}; stop issued -> accepting again "
            f"{fmt_s(o['down_for_s'])} (start -> accepting {fmt_s(o['start_to_back_s'])})")
        if o["ready_went_non_200"]:
            add(f"  /ready: first non-200 {fmt_s(o['ready_first_non_200_after_stop_s'])} after the stop "
                f"was issued, 200 again {fmt_s(o['ready_200_after_back_s'])} after {svc} was back; "
                f"non-200 for {fmt_s(o['ready_non_200_for_s'])} ({o['ready_polls_non_200']} of "
                f"{o['ready_polls']} polls); slowest answer {fmt_ms(o['ready_max_latency_ms'])}")
        else:
            add(f"  /ready: stayed 200 throughout ({o['ready_polls']} polls; slowest answer "
                f"{fmt_ms(o['ready_max_latency_ms'])})")
        if svc == "postgres":
            seen = (f"database breaker {o['server_lost_state']} {fmt_s(o['server_lost_after_stop_s'])} "
                    f"after the stop, closed again {fmt_s(o['server_regained_after_back_s'])} after "
                    f"PostgreSQL was back") if o["server_lost_state"] else "database breaker never seen open"
        else:
            seen = (f"Redis client disconnected {fmt_s(o['server_lost_after_stop_s'])} after the stop, "
                    f"connected again {fmt_s(o['server_regained_after_back_s'])} after Redis was back"
                    ) if o["server_lost_state"] else "Redis client never seen disconnected"
        add(f"  server (/api/v1/infra): {seen}")
        ttr = fmt_s(o["back_to_ready_s"])
        if o["back_to_ready_s"] is not None and o["back_to_ready_s"] < meta["poll_interval_s"]:
            ttr += f" (under the {int(meta['poll_interval_s'] * 1000)} ms probe interval)"
        if svc == "postgres":
            add(f"  TIME TO RECOVER: {ttr} from PostgreSQL accepting connections (pg_isready) "
                f"to /ready 200")
        else:
            add(f"  TIME TO RECOVER: {ttr} from Redis answering PING to the server's Redis "
                f"client connected again (/ready does not check Redis)")
        for ep in endpoints:
            name = ep["name"]
            add(f"  {ep['label']}:")
            add(f"    {'window':<11}{'span':>8}{'requests':>10}{'non-200':>9}  {'p50':>9}{'p99':>10}"
                f"{'max':>10}  status mix")
            for wname in ("before", "down", "recovering", "after"):
                w = o["windows"][wname]["by_endpoint"][name]
                mix = " ".join(f"{k}:{v}" for k, v in w["status"].items()) or "-"
                add(f"    {wname:<11}{w['span_s']:>7.2f}s{w['requests']:>10}{w['non_200']:>9}  "
                    f"{fmt_ms(w['p50_ms']):>9}{fmt_ms(w['p99_ms']):>10}{fmt_ms(w['max_ms']):>10}  {mix}")
            wd = o["windows"]["down"]["by_endpoint"][name]
            if wd["non_200"] and wd["p50_ms_non_200"] is not None:
                add(f"    down, non-200 answers only: p50 {fmt_ms(wd['p50_ms_non_200'])}, "
                    f"p99 {fmt_ms(wd['p99_ms_non_200'])}")
    add("")
    add("whole run, requests without any answer (connection errors, timeouts; not timestamped by oha):")
    for ep in endpoints:
        t = totals[ep["name"]]
        add(f"  {ep['label']:<36} {t['no_response']}  {t['errors'] if t['errors'] else ''}".rstrip())
    add("")
    add("checks:")
    for ok, text in checks:
        add(f"  {'ok  ' if ok else 'FAIL'} {text}")
    add(f"raw data: {raw}")
    add(bar)
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0 if all(ok for ok, _ in checks) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("poll")
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--infra", help="also poll this URL (/api/v1/infra) after each /ready")
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=2.0)
    p = sub.add_parser("wait-ready")
    p.add_argument("polls")
    p.add_argument("after", type=float)
    p.add_argument("--what", choices=("ready", "redis"), default="ready")
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("report")
    p.add_argument("--raw", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--json", required=True)
    args = ap.parse_args()
    return {"poll": cmd_poll, "wait-ready": cmd_wait_ready, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
