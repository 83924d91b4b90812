#!/usr/bin/env bash
# Load test of GET /api/v1/agents/{id}/tools on uniformly random agent ids.
#
# Starts the release server on a free loopback port with a fresh SQLite database, seeds
# 2,000 tools / 1,000 agents / 10 attachments per agent through the API, then measures
#   1. closed loop: wrk, 2 threads, 64 connections (5 s warm-up discarded, then the run);
#   2. open loop:   oha at a fixed 5,000 requests/s, 64 connections;
# prints a summary and writes it as JSON. See bench/README.md.
#
# Environment:
#   GROUNDWORK_BENCH_SKIP_BUILD=1    do not run `cargo build --release`
#   GROUNDWORK_BENCH_DURATION=20     seconds of each measured run (closed and open loop)
#   GROUNDWORK_BENCH_WARMUP=5        seconds of the discarded wrk warm-up
#   GROUNDWORK_BENCH_RATE=5000       open-loop request rate (requests/s)
#   GROUNDWORK_BENCH_CONNECTIONS=64  connections for both load generators
#   GROUNDWORK_BENCH_THREADS=2       wrk threads
#   GROUNDWORK_BENCH_OUT=DIR         where results go (default /tmp/groundwork-bench)
#   GROUNDWORK_BENCH_BIN=PATH        server binary (default <target dir>/release/groundwork)
#   GROUNDWORK_BENCH_RUST_LOG=info   RUST_LOG for the server (per-request logs would skew it)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"

die() { echo "tools_endpoint.sh: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

seconds() { # "20" or "20s" -> 20; anything else is an error
    local name=$1 value=$2
    value=${value%s}
    [[ $value =~ ^[1-9][0-9]*$ ]] || die "$name must be a whole number of seconds, got '$2'"
    echo "$value"
}
DURATION=$(seconds GROUNDWORK_BENCH_DURATION "${GROUNDWORK_BENCH_DURATION:-20}")
WARMUP=$(seconds GROUNDWORK_BENCH_WARMUP "${GROUNDWORK_BENCH_WARMUP:-5}")
RATE=${GROUNDWORK_BENCH_RATE:-5000}
CONNECTIONS=${GROUNDWORK_BENCH_CONNECTIONS:-64}
THREADS=${GROUNDWORK_BENCH_THREADS:-2}
OUT_DIR=${GROUNDWORK_BENCH_OUT:-/tmp/groundwork-bench}
SERVER_RUST_LOG=${GROUNDWORK_BENCH_RUST_LOG:-info}
AGENTS=1000
TOOLS=2000
PER_AGENT=10
for v in RATE CONNECTIONS THREADS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "GROUNDWORK_BENCH_$v must be a positive integer"
done

# --- prerequisites (never installed from here) -------------------------------------------
missing=0
if ! command -v wrk >/dev/null 2>&1; then
    echo "missing: wrk    -> install: apt-get update && apt-get install -y wrk" >&2
    missing=1
fi
if ! command -v oha >/dev/null 2>&1; then
    echo "missing: oha    -> install: cargo install oha --locked   (binary in ~/.cargo/bin, put it on PATH)" >&2
    missing=1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "missing: python3 (3.8 or newer, standard library only)" >&2
    missing=1
fi
[[ $missing == 0 ]] || die "install the tools above and run again"
oha --help 2>/dev/null | grep -q -- '--urls-from-file' \
    || die "this oha has no --urls-from-file; install a newer one: cargo install oha --locked"
oha --help 2>/dev/null | grep -q -- '--output-format' \
    || die "this oha has no --output-format; install a newer one: cargo install oha --locked"

WRK_VERSION=$(wrk -v 2>&1 | head -n1 | awk '{print $2}' || true)
OHA_VERSION=$(oha --version 2>/dev/null | awk '{print $2}' || true)

# --- build -----------------------------------------------------------------------------------
# What is being built: the commit, and whether tracked files differed from it at build time.
NPROC=$(nproc)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=false
[[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null || true) ]] || DIRTY=true
if [[ ${GROUNDWORK_BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release (may wait for the cargo build lock)"
    (cd "$ROOT" && cargo build --release)
fi
if [[ -n ${GROUNDWORK_BENCH_BIN:-} ]]; then
    SERVER_BIN=$GROUNDWORK_BENCH_BIN
else
    SERVER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/groundwork"
    [[ $SERVER_BIN = /* ]] || SERVER_BIN="$ROOT/$SERVER_BIN"
fi
[[ -x $SERVER_BIN ]] || die "no server binary at $SERVER_BIN (run without GROUNDWORK_BENCH_SKIP_BUILD=1)"

# --- workspace, cleanup ----------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
RESULT_JSON="$OUT_DIR/tools_$STAMP.json"
SERVER_LOG="$OUT_DIR/tools_$STAMP.server.log"
WRK_OUT="$OUT_DIR/tools_$STAMP.wrk.txt"
OHA_OUT="$OUT_DIR/tools_$STAMP.oha.json"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/groundwork-bench.XXXXXX")
SERVER_PID=""
CHILD_PID=""

# Runs a command in the background and waits for it: bash runs a trap only once the
# foreground command has finished, but interrupts `wait` at once, so a SIGINT/SIGTERM stops
# the benchmark (and the server) right away instead of after the current 20 s run.
run() {
    "$@" &
    CHILD_PID=$!
    local rc=0
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $CHILD_PID ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
        kill -TERM "$CHILD_PID" 2>/dev/null || true
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do # up to 5 s for the graceful shutdown
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "tools_endpoint.sh: server did not stop within 5 s, killing it" >&2
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    if [[ $rc != 0 ]]; then
        echo "tools_endpoint.sh: FAILED (exit $rc); server log: $SERVER_LOG" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- start the server ------------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
BASE="http://127.0.0.1:$PORT"
log "starting $SERVER_BIN on 127.0.0.1:$PORT, database $WORK/bench.db, log $SERVER_LOG"
(
    cd "$WORK"
    # No API keys (every request would need a Bearer token); everything else at its default.
    exec env -u GROUNDWORK_API_KEYS \
        GROUNDWORK_BIND="127.0.0.1:$PORT" \
        GROUNDWORK_DATABASE_URL="sqlite://$WORK/bench.db" \
        GROUNDWORK_STORAGE_URL="file://$WORK/files" \
        GROUNDWORK_LOG_FORMAT=text \
        RUST_LOG="$SERVER_RUST_LOG" \
        "$SERVER_BIN" serve
) >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

python3 - "$BASE/health" "$SERVER_PID" <<'PY' || { tail -n 30 "$SERVER_LOG" >&2; die "server did not become healthy"; }
import sys, time, urllib.request
url, pid = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:  # an exited server stays a zombie until bash reaps it: look at its state
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    if state in ("Z", "X", "gone"):
        sys.exit("server exited during start-up")
    try:
        with opener.open(url, timeout=1) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("no answer from /health within 60 s")
PY
log "server healthy"

# --- seed --------------------------------------------------------------------------------------
log "seeding $TOOLS tools, $AGENTS agents, $PER_AGENT tools per agent"
run python3 "$BENCH_DIR/seed.py" --base-url "$BASE" --tools "$TOOLS" --agents "$AGENTS" \
    --per-agent "$PER_AGENT" --workers 8 >"$WORK/seed.json" || die "seeding failed"
SEED_JSON=$(cat "$WORK/seed.json")

# --- closed loop: wrk ------------------------------------------------------------------------
URL="$BASE/api/v1/agents/1/tools" # the path is replaced per request by random_agent.lua
export GROUNDWORK_BENCH_AGENTS=$AGENTS
log "wrk warm-up: ${WARMUP}s, $THREADS threads, $CONNECTIONS connections (discarded)"
run wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$BENCH_DIR/random_agent.lua" "$URL" \
    >/dev/null || die "wrk warm-up failed"
log "wrk: ${DURATION}s, $THREADS threads, $CONNECTIONS connections"
run wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$BENCH_DIR/random_agent.lua" \
    "$URL" >"$WRK_OUT" || die "wrk failed (output in $WRK_OUT)"
sed '/^GWBENCH_JSON /d' "$WRK_OUT" >&2
WRK_JSON=$(sed -n 's/^GWBENCH_JSON //p' "$WRK_OUT")
[[ -n $WRK_JSON ]] || die "no GWBENCH_JSON line in the wrk output ($WRK_OUT)"

# --- open loop: oha --------------------------------------------------------------------------
URLS_FILE="$WORK/urls.txt"
for ((i = 1; i <= AGENTS; i++)); do echo "$BASE/api/v1/agents/$i/tools"; done >"$URLS_FILE"
log "oha: ${RATE} requests/s for ${DURATION}s, $CONNECTIONS connections, latency corrected"
# --urls-from-file picks one of the 1,000 URLs uniformly at random per request;
# --latency-correction measures from each request's scheduled send time (no coordinated
# omission): if the server falls behind the rate, the queueing shows in the latency.
run oha --no-tui --output-format json -o "$OHA_OUT" \
    -q "$RATE" -z "${DURATION}s" -c "$CONNECTIONS" --latency-correction \
    --urls-from-file "$URLS_FILE" || die "oha failed"

# --- summary -----------------------------------------------------------------------------------
export SEED_JSON WRK_JSON OHA_OUT RESULT_JSON WRK_OUT SERVER_LOG STAMP DURATION WARMUP RATE \
    CONNECTIONS THREADS NPROC COMMIT DIRTY WRK_VERSION OHA_VERSION AGENTS SERVER_BIN
SUMMARY_RC=0
python3 - <<'PY' || SUMMARY_RC=$?
import datetime, json, os, sys

e = os.environ
seed = json.loads(e["SEED_JSON"])
wrk = json.loads(e["WRK_JSON"])
with open(e["OHA_OUT"]) as f:
    oha = json.load(f)

codes = {int(k): v for k, v in oha.get("statusCodeDistribution", {}).items()}
responses = sum(codes.values())
ok = sum(v for k, v in codes.items() if 200 <= k < 300)
# oha counts the requests cut off by the -z deadline as errors; they are not the server's.
errors = {k: v for k, v in oha.get("errorDistribution", {}).items() if "deadline" not in k.lower()}
attempted = responses + sum(errors.values())
open_p99_ms = oha["metrics"]["latency_ms"]["p99"]
open_p50_ms = oha["metrics"]["latency_ms"]["p50"]
open_rps = oha["summary"]["requestsPerSec"]
rate = int(e["RATE"])

wrk_errors = wrk["errors"]
socket_errors = sum(wrk_errors[k] for k in ("connect", "read", "write", "timeout"))
result = {
    "benchmark": "GET /api/v1/agents/{id}/tools, uniformly random id in 1..%s" % e["AGENTS"],
    "timestamp": e["STAMP"],
    "git_commit": e["COMMIT"],
    "git_dirty": e["DIRTY"] == "true",
    "server_bin": e["SERVER_BIN"],
    "server_bin_mtime": datetime.datetime.fromtimestamp(
        os.path.getmtime(e["SERVER_BIN"]), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "nproc": int(e["NPROC"]),
    "tools": {"wrk": e["WRK_VERSION"], "oha": e["OHA_VERSION"]},
    "seed": seed,
    "closed_loop": {
        "tool": "wrk", "threads": int(e["THREADS"]), "connections": int(e["CONNECTIONS"]),
        "warmup_s": int(e["WARMUP"]), "duration_s": wrk["duration_s"],
        "requests": wrk["requests"], "rps": round(wrk["rps"], 1),
        "latency_ms": {k: round(v / 1000, 3) for k, v in wrk["latency_us"].items()},
        "non_2xx": wrk_errors["status"], "socket_errors": wrk_errors,
    },
    "open_loop": {
        "tool": "oha", "target_rps": rate, "connections": int(e["CONNECTIONS"]),
        "duration_s": int(e["DURATION"]), "latency_correction": True,
        "achieved_rps": round(open_rps, 1),
        "latency_ms": {k: round(v, 3) for k, v in oha["metrics"]["latency_ms"].items()},
        "responses": responses, "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "errors": errors,
        "success_rate": round(ok / attempted, 6) if attempted else 0.0,
        "oha_success_rate": oha["summary"]["successRate"],
    },
    "raw": {"wrk": e["WRK_OUT"], "oha": e["OHA_OUT"], "server_log": e["SERVER_LOG"]},
}
with open(e["RESULT_JSON"], "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")

c, o = result["closed_loop"], result["open_loop"]
print(f"""
==================== groundwork: GET /api/v1/agents/{{id}}/tools ====================
commit {result['git_commit']}{' (dirty tree)' if result['git_dirty'] else ''}, nproc {result['nproc']}, wrk {e['WRK_VERSION']}, oha {e['OHA_VERSION']}
server {result['server_bin']} (built {result['server_bin_mtime']})
closed loop (wrk, {c['threads']} threads, {c['connections']} conns, {c['duration_s']:.0f} s):
  {c['rps']:.0f} requests/s   p50 {c['latency_ms']['p50']:.2f} ms   p99 {c['latency_ms']['p99']:.2f} ms   non-2xx {c['non_2xx']}   socket errors {socket_errors}
open loop (oha, {rate} requests/s, {o['connections']} conns, {o['duration_s']} s, latency corrected):
  achieved {o['achieved_rps']:.0f} requests/s   p50 {o['latency_ms']['p50']:.2f} ms   p99 {o['latency_ms']['p99']:.2f} ms   success {100 * o['success_rate']:.2f}% ({ok}/{attempted})
results: {e['RESULT_JSON']}
=====================================================================================""")

failures = []
if c["non_2xx"]:
    failures.append(f"closed loop: {c['non_2xx']} responses with status > 399")
if socket_errors:
    failures.append(f"closed loop: socket errors {wrk_errors}")
if ok != responses:
    failures.append(f"open loop: non-2xx responses {o['status_codes']}")
if errors:
    print(f"WARNING: open loop: {sum(errors.values())} requests failed without a response: {errors}",
          file=sys.stderr)
if open_rps < 0.95 * rate:
    print(f"WARNING: open loop reached {open_rps:.0f} requests/s, under 95% of the {rate} target",
          file=sys.stderr)
if failures:
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    sys.exit(1)
PY

# The server colours its text log; strip the escape codes before looking for levels.
LOG_ISSUES=$(sed 's/\x1b\[[0-9;]*m//g' "$SERVER_LOG" | grep -E '^[^ ]+ +(WARN|ERROR) ' || true)
if [[ -n $LOG_ISSUES ]]; then
    echo "note: the server log has $(wc -l <<<"$LOG_ISSUES") WARN/ERROR lines, the first ones:" >&2
    head -n 20 <<<"$LOG_ISSUES" >&2
fi
exit "$SUMMARY_RC"
