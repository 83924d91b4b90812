#!/usr/bin/env bash
# Load test of the LLM caching proxy (POST /v1/chat/completions) against the testkit's mock
# OpenAI upstream: what the proxy adds to a miss, and how fast hits come from memory and from
# Redis. See bench/README.md.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
ME=llm_proxy.sh

usage() {
    cat <<'EOF'
usage: bash bench/llm_proxy.sh [-h|--help]

Load test of groundwork's OpenAI-compatible caching proxy, POST /v1/chat/completions. It
  1. builds the release server, the mock upstream and the load generator (cargo build
     --release -p groundwork-server --bin groundwork -p groundwork-testkit --bin mock-openai
     --bin loadgen);
  2. starts target/release/mock-openai on a free 127.0.0.1 port (--latency-ms 20: every
     answer waits 20 ms) and two servers on free ports, both with GROUNDWORK_LLM_BASE_URL on
     the mock and GROUNDWORK_REDIS_URL on the local Redis, each with its own fresh SQLite
     database in a temporary directory:
       A: the default 256 MB in-memory LLM cache,
       B: GROUNDWORK_LLM_CACHE_MEMORY_MB=0 (clamped to 1 byte: no answer fits in memory, so
          every hit has to come from Redis);
  3. checks the x-groundwork-cache response header with a few curl calls (MISS, then HIT,
     BYPASS when asked for and for a non-deterministic request, HIT on B from Redis);
  4. MISS OVERHEAD, open loop at 500 and 1,000 requests/s, keep-alive, latency from each
     request's scheduled start (target/release/loadgen, one thread: oha sends one body, or
     random lines of a file with repeats, so it cannot make every request distinct): (a)
     straight to the mock,
     (b) through A; every request a distinct deterministic chat request (its own message,
     "temperature": 0, no x-groundwork-cache header), so each one is a real MISS: looked up,
     sent upstream, recorded and stored; reports p50/p99 of both, the added p50/p99
     (b - a), errors, the MISS count (headers and the server's counters), upstream calls
     and the upstream TCP connections during (b) (counted by the mock, GET
     /mock/connections: the most open at once, opened and closed in the window) against
     the HTTP client's pool (30 idle per host);
  5. CACHE HITS at 1,000 requests/s, the same deterministic body every time: from A's memory,
     then from Redis through B; p99, the x-groundwork-cache mix (the server's counters,
     GET /api/v1/llm-cache) and the upstream calls during the window (0 expected);
  5b. STREAMING MISS: time to the first SSE event of GROUNDWORK_LLMPROXY_TTFB_N streaming
     requests (stream: true, each one distinct, so a real MISS through the proxy) straight
     to the mock and through A, alternating, one request at a time on one keep-alive
     connection per path; p50/p90/p99 and the added time (goal at p50, p99 reported);
  For every window through a server it records the server's own CPU time (/proc/<pid>/stat)
  and reports it per answered request.
  For every window it also records the machine's CPU time (/proc/stat) and reports the
  share the hypervisor took (steal): on a shared host it can reach tens of percent, and a
  window with much steal measures the host, not the proxy (the report says so).
  6. prints the summary with the goals as checks and writes it to
     bench/results/llm-proxy-<UTC stamp>.txt (raw data in bench/results/llm-proxy-<UTC stamp>/).

A warm-up of GROUNDWORK_LLMPROXY_WARMUP s at the same rate and on the same target is run
and thrown away before each measured window. The load generator, both servers, the mock
and Redis share the machine's cores: on 2 cores the figures are a lower bound and noisy.

Goals (fixed; a miss is printed and makes the exit status 1, the figures are printed
anyway): added p50 <= 0.5 ms and added p99 <= 2 ms at 500 and 1,000 requests/s with 0
errors and every proxied answer a MISS with its own upstream call; upstream connections
(peak and distinct) <= the pool's idle-per-host size; streaming: added time to the first
event p50 <= 1 ms (p99 reported), every proxied stream a MISS; hits
p99 < 1 ms from memory and < 3 ms from Redis, every answer a HIT, 0 upstream calls.

Exit status: 0 when every check holds, 1 when one is missed or on any error (the summary is
written first when the load ran), 2 on bad usage.

Environment (defaults in brackets):
  GROUNDWORK_LLMPROXY_SKIP_BUILD=1      use the existing binaries, no cargo build
  GROUNDWORK_LLMPROXY_BIN               server binary [<target dir>/release/groundwork]
  GROUNDWORK_LLMPROXY_MOCK_BIN          mock upstream [<target dir>/release/mock-openai]
  GROUNDWORK_LLMPROXY_LOADGEN_BIN       miss-window load generator [<target dir>/release/loadgen]
  GROUNDWORK_LLMPROXY_DURATION          seconds of each measured window [20]
  GROUNDWORK_LLMPROXY_WARMUP            seconds of the warm-up before each window [3]
  GROUNDWORK_LLMPROXY_RATES             miss-overhead rates, requests/s ["500 1000"]
  GROUNDWORK_LLMPROXY_HIT_RATE          cache-hit rate, requests/s [1000]
  GROUNDWORK_LLMPROXY_CONNECTIONS       oha connections [64]
  GROUNDWORK_LLMPROXY_MOCK_LATENCY_MS   the mock's delay before answering [20]
  GROUNDWORK_LLMPROXY_TTFB_N           streaming requests per path for the time to first
                                        event [1000]
  GROUNDWORK_LLMPROXY_REDIS_HOST/_PORT  Redis both servers share [127.0.0.1] / [6379]
  GROUNDWORK_LLMPROXY_CACHE_TTL_SECS    the servers' GROUNDWORK_LLM_CACHE_TTL_SECS: how long
                                        the run's entry stays in Redis [600]
  GROUNDWORK_LLMPROXY_OUT               results directory [bench/results]
  GROUNDWORK_LLMPROXY_RUST_LOG          RUST_LOG of the servers [info]

Needs: cargo, python3 (standard library), curl (>= 7.84, for -w '%header{...}'),
redis-cli, a running Redis, oha >= 1.x (--latency-correction, --output-format, -w).
It takes about 2.5 minutes after the build (6 windows of warm-up + 20 s).
EOF
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; echo "$ME: unexpected argument '$1'" >&2; exit 2 ;;
esac

die() { echo "$ME: $*" >&2; exit 1; }
log() { echo "==> [$(date -u +%H:%M:%S)] $*" >&2; }

posint() { # name value -> value, or exit 2
    [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$ME: $1 must be a positive integer, got '$2'" >&2; exit 2; }
    echo "$2"
}
DURATION=$(posint GROUNDWORK_LLMPROXY_DURATION "${GROUNDWORK_LLMPROXY_DURATION:-20}")
WARMUP=$(posint GROUNDWORK_LLMPROXY_WARMUP "${GROUNDWORK_LLMPROXY_WARMUP:-3}")
read -r -a RATES <<<"${GROUNDWORK_LLMPROXY_RATES:-500 1000}"
[[ ${#RATES[@]} -gt 0 ]] || { echo "$ME: GROUNDWORK_LLMPROXY_RATES is empty" >&2; exit 2; }
for r in "${RATES[@]}"; do posint GROUNDWORK_LLMPROXY_RATES "$r" >/dev/null; done
HIT_RATE=$(posint GROUNDWORK_LLMPROXY_HIT_RATE "${GROUNDWORK_LLMPROXY_HIT_RATE:-1000}")
CONNECTIONS=$(posint GROUNDWORK_LLMPROXY_CONNECTIONS "${GROUNDWORK_LLMPROXY_CONNECTIONS:-64}")
MOCK_LATENCY_MS=$(posint GROUNDWORK_LLMPROXY_MOCK_LATENCY_MS "${GROUNDWORK_LLMPROXY_MOCK_LATENCY_MS:-20}")
TTFB_N=$(posint GROUNDWORK_LLMPROXY_TTFB_N "${GROUNDWORK_LLMPROXY_TTFB_N:-1000}")
CACHE_TTL=$(posint GROUNDWORK_LLMPROXY_CACHE_TTL_SECS "${GROUNDWORK_LLMPROXY_CACHE_TTL_SECS:-600}")
REDIS_HOST=${GROUNDWORK_LLMPROXY_REDIS_HOST:-127.0.0.1}
REDIS_PORT=$(posint GROUNDWORK_LLMPROXY_REDIS_PORT "${GROUNDWORK_LLMPROXY_REDIS_PORT:-6379}")
REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT"
OUT_BASE=${GROUNDWORK_LLMPROXY_OUT:-$BENCH_DIR/results}
SERVER_RUST_LOG=${GROUNDWORK_LLMPROXY_RUST_LOG:-info}

# --- prerequisites (never installed from here) -------------------------------------------
missing=0
need() { # command, install hint
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "missing: $1    -> install: $2" >&2
        missing=1
    fi
}
need oha "cargo install oha --locked   (binary in ~/.cargo/bin, put it on PATH)"
need python3 "apt-get install -y python3 (3.8 or newer, standard library only)"
need curl "apt-get install -y curl"
need redis-cli "apt-get install -y redis-tools"
need cargo "rustup (https://rustup.rs)"
[[ $missing == 0 ]] || die "install the tools above and run again"
for flag in --output-format --latency-correction --wait-ongoing-requests-after-deadline; do
    oha --help 2>/dev/null | grep -q -- "$flag" \
        || die "this oha has no $flag; install a newer one: cargo install oha --locked"
done
OHA_VERSION=$(oha --version 2>/dev/null | awk '{print $2}' || true)
curl -s -o /dev/null -w '%header{date}' --max-time 1 "file:///dev/null" >/dev/null 2>&1 \
    || die "this curl has no -w '%header{...}' (needs curl >= 7.84)"
[[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] \
    || die "Redis does not answer on $REDIS_HOST:$REDIS_PORT; start it first"
REDIS_VERSION=$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" info server 2>/dev/null \
    | tr -d '\r' | sed -n 's/^redis_version://p')

# --- build -----------------------------------------------------------------------------------
NPROC=$(nproc)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=false
[[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null || true) ]] || DIRTY=true
if [[ ${GROUNDWORK_LLMPROXY_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release (server, mock-openai, loadgen; may wait for the cargo build lock)"
    (cd "$ROOT" && cargo build --release -p groundwork-server --bin groundwork \
        -p groundwork-testkit --bin mock-openai --bin loadgen)
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ $TARGET_DIR = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
SERVER_BIN=${GROUNDWORK_LLMPROXY_BIN:-$TARGET_DIR/release/groundwork}
MOCK_BIN=${GROUNDWORK_LLMPROXY_MOCK_BIN:-$TARGET_DIR/release/mock-openai}
LOADGEN_BIN=${GROUNDWORK_LLMPROXY_LOADGEN_BIN:-$TARGET_DIR/release/loadgen}
[[ -x $SERVER_BIN ]] || die "no server binary at $SERVER_BIN (run without GROUNDWORK_LLMPROXY_SKIP_BUILD=1)"
[[ -x $MOCK_BIN ]] || die "no mock-openai binary at $MOCK_BIN (run without GROUNDWORK_LLMPROXY_SKIP_BUILD=1)"
[[ -x $LOADGEN_BIN ]] || die "no loadgen binary at $LOADGEN_BIN (run without GROUNDWORK_LLMPROXY_SKIP_BUILD=1)"
SERVER_BUILT=$(date -u -r "$SERVER_BIN" +%Y-%m-%dT%H:%M:%SZ)
MOCK_BUILT=$(date -u -r "$MOCK_BIN" +%Y-%m-%dT%H:%M:%SZ)

# --- workspace, cleanup ----------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_BASE"
OUT_BASE=$(cd "$OUT_BASE" && pwd)
RAW="$OUT_BASE/llm-proxy-$STAMP"
SUMMARY_TXT="$OUT_BASE/llm-proxy-$STAMP.txt"
mkdir -p "$RAW"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/groundwork-llm-proxy.XXXXXX")
MOCK_PID=""
A_PID=""
B_PID=""
CHILD_PID=""

# Runs a command in the background and waits for it, so that Ctrl-C/TERM interrupts the
# wait at once and the trap stops everything.
run() {
    "$@" &
    CHILD_PID=$!
    local rc=0
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

stop_pid() { # pid, name, seconds to wait after TERM
    local pid=$1 name=$2 wait_s=$3
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((wait_s * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$ME: $name did not stop within $wait_s s, killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap '' INT TERM
    trap - EXIT
    stop_pid "$CHILD_PID" "child" 5
    stop_pid "$A_PID" "server A" 12
    stop_pid "$B_PID" "server B" 12
    stop_pid "$MOCK_PID" "mock-openai" 5
    rm -rf "$WORK"
    if [[ $rc != 0 ]]; then
        echo "$ME: exit $rc; raw data and logs in $RAW" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- mock upstream ---------------------------------------------------------------------------
MOCK_PORT=$(free_port)
MOCK_BASE="http://127.0.0.1:$MOCK_PORT"
MOCK_URL="$MOCK_BASE/v1"
log "starting $MOCK_BIN on 127.0.0.1:$MOCK_PORT (--latency-ms $MOCK_LATENCY_MS, one runtime worker per core)"
"$MOCK_BIN" --bind "127.0.0.1:$MOCK_PORT" --latency-ms "$MOCK_LATENCY_MS" --chunks 8 \
    >"$RAW/mock.log" 2>&1 &
MOCK_PID=$!
for _ in $(seq 1 100); do
    grep -q '^http://' "$RAW/mock.log" 2>/dev/null && break
    kill -0 "$MOCK_PID" 2>/dev/null || die "mock-openai exited: $(cat "$RAW/mock.log")"
    sleep 0.1
done
grep -q '^http://' "$RAW/mock.log" || die "mock-openai did not print its URL within 10 s"

# --- servers ---------------------------------------------------------------------------------
# The run's own prompt: a key no earlier run stored, so the first request is a MISS.
BODY_FILE="$WORK/body.json"
printf '{"model":"mock-gpt","temperature":0,"messages":[{"role":"system","content":"You are a terse assistant."},{"role":"user","content":"groundwork llm_proxy bench %s: say hello"}]}' \
    "$STAMP" >"$BODY_FILE"
# The miss windows' bodies: the same shape and size class, made distinct per request by
# loadgen (@N@ becomes "<window>-<n>"), so no request of the run repeats another.
MISS_TEMPLATE="$WORK/body-miss.json"
printf '{"model":"mock-gpt","temperature":0,"messages":[{"role":"system","content":"You are a terse assistant."},{"role":"user","content":"groundwork llm_proxy bench %s miss @N@: say hello"}]}' \
    "$STAMP" >"$MISS_TEMPLATE"
NONDET_FILE="$WORK/body-nondeterministic.json"
sed 's/"temperature":0/"temperature":0.7/' "$BODY_FILE" >"$NONDET_FILE"
BODY_BYTES=$(wc -c <"$BODY_FILE")

# No GROUNDWORK_* variable of the caller's environment reaches the servers.
mapfile -t UNSET < <(compgen -e | grep '^GROUNDWORK_' | sed 's/^/-u/' || true)
start_server() { # name port memory_mb -> pid in $!
    local name=$1 port=$2 memory=$3
    mkdir -p "$WORK/$name"
    (
        cd "$WORK/$name"
        exec env "${UNSET[@]}" \
            GROUNDWORK_BIND="127.0.0.1:$port" \
            GROUNDWORK_DATABASE_URL="sqlite://$WORK/$name/bench.db" \
            GROUNDWORK_STORAGE_URL="file://$WORK/$name/files" \
            GROUNDWORK_REDIS_URL="$REDIS_URL" \
            GROUNDWORK_LLM_BASE_URL="$MOCK_URL" \
            GROUNDWORK_LLM_API_KEY="sk-groundwork-bench" \
            GROUNDWORK_LLM_CACHE_MEMORY_MB="$memory" \
            GROUNDWORK_LLM_CACHE_TTL_SECS="$CACHE_TTL" \
            GROUNDWORK_LOG_FORMAT=text \
            RUST_LOG="$SERVER_RUST_LOG" \
            "$SERVER_BIN" serve
    ) >"$RAW/server-$name.log" 2>&1 &
}
A_PORT=$(free_port)
A_BASE="http://127.0.0.1:$A_PORT"
log "starting server A on 127.0.0.1:$A_PORT (LLM cache: 256 MB in memory + Redis $REDIS_URL)"
start_server A "$A_PORT" 256
A_PID=$!
B_PORT=$(free_port)
while [[ $B_PORT == "$A_PORT" ]]; do B_PORT=$(free_port); done
B_BASE="http://127.0.0.1:$B_PORT"
log "starting server B on 127.0.0.1:$B_PORT (LLM cache: GROUNDWORK_LLM_CACHE_MEMORY_MB=0 + Redis $REDIS_URL)"
start_server B "$B_PORT" 0
B_PID=$!
python3 "$BENCH_DIR/llm_proxy.py" wait "$A_BASE/ready" "$A_PID" \
    || { tail -n 30 "$RAW/server-A.log" >&2; die "server A did not become ready"; }
python3 "$BENCH_DIR/llm_proxy.py" wait "$B_BASE/ready" "$B_PID" \
    || { tail -n 30 "$RAW/server-B.log" >&2; die "server B did not become ready"; }
log "servers ready"
POOL=$(curl -sf "$A_BASE/api/v1/infra" | python3 -c '
import json, sys
print((json.load(sys.stdin).get("http_client") or {}).get("pool_max_idle_per_host") or "")' || true)
[[ -n $POOL ]] || { POOL=30; log "pool size not in /api/v1/infra; assuming the default 30"; }

# --- helpers ---------------------------------------------------------------------------------
chat() { # base [header] -> "STATUS CACHE-HEADER" ; body from $CHAT_BODY (default the run's)
    local base=$1
    shift
    local args=(-sS -o /dev/null --max-time 10 -w '%{http_code} %header{x-groundwork-cache}'
        -X POST -H 'content-type: application/json' --data-binary "@${CHAT_BODY:-$BODY_FILE}")
    [[ $# -gt 0 ]] && args+=(-H "$1")
    curl "${args[@]}" "$base/v1/chat/completions" || true
}
# The machine's CPU counters and the wall clock, as JSON members (before_/after_ prefix):
# user and system time in /proc/stat are sampled at timer ticks and miss short bursts on a
# tickless kernel, so the report computes the busy share from idle time against the wall
# clock instead.
cpu_mark() { # before|after
    printf '"%s": "%s", "%s_wall_s": %s, "cpus": %s, "ticks_per_s": %s' "$1" \
        "$(head -n 1 /proc/stat)" "$1" "$(date +%s.%N)" "$(nproc)" "$(getconf CLK_TCK)"
}
mock_calls() { # -> the mock's call count, this probe included (from the answer's id)
    curl -sS --max-time 10 -X POST -H 'content-type: application/json' \
        --data-binary '{"model":"mock-gpt","messages":[{"role":"user","content":"probe"}]}' \
        "$MOCK_URL/chat/completions" | sed -n 's/.*"id":"chatcmpl-mock-\([0-9]*\)".*/\1/p'
}
stats() { # base file
    curl -sSf --max-time 10 "$1/api/v1/llm-cache" >"$2" || echo '{}' >"$2"
}
server_ticks() { # pid -> the process's user + system CPU time so far, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo null
}
redis_gets() {
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" info commandstats 2>/dev/null | tr -d '\r' \
        | sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p' | grep . || echo 0
}

# --- x-groundwork-cache check (curl) ---------------------------------------------------------
log "checking x-groundwork-cache with curl"
HC_ROWS="$RAW/header-check.tsv"
: >"$HC_ROWS"
HC_OK=1
expect() { # label expected "status header"
    local label=$1 want=$2 got=$3 mark=ok
    [[ $got == "200 $want" ]] || { mark=UNEXPECTED; HC_OK=0; }
    printf '%-58s -> %-12s (expected 200 %s) %s\n' "$label" "$got" "$want" "$mark" >>"$HC_ROWS"
    echo "   $label -> $got (expected 200 $want) $mark" >&2
}
CALLS_0=$(mock_calls)
expect "A: deterministic body, first time" MISS "$(chat "$A_BASE")"
for i in 1 2 3; do expect "A: same body again ($i)" HIT "$(chat "$A_BASE")"; done
expect "A: same body, x-groundwork-cache: bypass" BYPASS "$(chat "$A_BASE" 'x-groundwork-cache: bypass')"
expect "A: temperature 0.7 (non-deterministic)" BYPASS "$(CHAT_BODY=$NONDET_FILE chat "$A_BASE")"
# A writes to Redis from a background queue: wait for that write before asking B.
for _ in $(seq 1 50); do
    stats "$A_BASE" "$WORK/a.json"
    python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("cache", {}).get("redis_writes", 0) >= 1 else 1)' \
        "$WORK/a.json" && break
    sleep 0.1
done
stats "$B_BASE" "$WORK/b0.json"
for i in 1 2 3; do expect "B (memory 0 MB): same body ($i), from Redis" HIT "$(chat "$B_BASE")"; done
expect "B: same body, x-groundwork-cache: bypass" BYPASS "$(chat "$B_BASE" 'x-groundwork-cache: bypass')"
stats "$B_BASE" "$WORK/b1.json"
CALLS_1=$(mock_calls)
HC_UPSTREAM=$((CALLS_1 - CALLS_0 - 1))
HC_B_REDIS=$(python3 -c '
import json, sys
b0, b1 = (json.load(open(p)).get("cache", {}) for p in sys.argv[1:3])
print(b1.get("hits_redis", 0) - b0.get("hits_redis", 0), b1.get("hits_memory", 0) - b0.get("hits_memory", 0))' \
    "$WORK/b0.json" "$WORK/b1.json")
read -r HC_B_HITS_REDIS HC_B_HITS_MEMORY <<<"$HC_B_REDIS"
# MISS, BYPASS, non-deterministic and B's BYPASS: 4 upstream calls, no more.
[[ $HC_UPSTREAM == 4 ]] || HC_OK=0
[[ $HC_B_HITS_REDIS == 3 && $HC_B_HITS_MEMORY == 0 ]] || HC_OK=0
echo "upstream calls during the check (mock's counter): $HC_UPSTREAM (expected 4: the MISS and the 3 BYPASS)" >>"$HC_ROWS"
echo "B's hits from Redis / from memory: $HC_B_HITS_REDIS / $HC_B_HITS_MEMORY (expected 3 / 0)" >>"$HC_ROWS"
tail -n 2 "$HC_ROWS" | sed 's/^/   /' >&2

# --- load windows ----------------------------------------------------------------------------
WINDOWS_JSON="$WORK/windows.jsonl"
: >"$WINDOWS_JSON"
oha_run() { # out rate seconds url [header] ; the run's body, POST, keep-alive
    local out=$1 rate=$2 secs=$3 url=$4
    shift 4
    local args=(--no-tui --output-format json -o "$out" -q "$rate" -z "${secs}s"
        -c "$CONNECTIONS" --latency-correction -w -t 10s -m POST -T application/json
        -D "$BODY_FILE")
    [[ $# -gt 0 ]] && args+=(-H "$1")
    run oha "${args[@]}" "$url" >"$out.log" 2>&1
}
# out rate seconds url tag [header] ; open loop, a distinct body per request (real misses)
unique_run() {
    local out=$1 rate=$2 secs=$3 url=$4 tag=$5
    shift 5
    local args=(--url "$url" --template "$MISS_TEMPLATE" --tag "$tag" --rate "$rate"
        --seconds "$secs" --connections "$CONNECTIONS" --timeout 10 --out "$out")
    [[ $# -gt 0 ]] && args+=(--header "$1")
    run "$LOADGEN_BIN" "${args[@]}" >"$out.log" 2>&1
}
# One window of load: oha (the run's body every time) or unique (a distinct body per request).
load_run() { # generator out rate seconds url tag [header]
    local gen=$1 out=$2 rate=$3 secs=$4 url=$5 tag=$6
    shift 6
    if [[ $gen == unique ]]; then
        unique_run "$out" "$rate" "$secs" "$url" "$tag" "$@"
    else
        oha_run "$out" "$rate" "$secs" "$url" "$@"
    fi
}
# name rate url instance-base|- sample-connections(0|1) generator(oha|unique) [header]
measure() {
    local name=$1 rate=$2 url=$3 inst=$4 sample=$5 gen=$6
    shift 6
    log "$name: warm-up ${WARMUP}s at ${rate}/s (discarded)"
    load_run "$gen" "$WORK/warmup.json" "$rate" "$WARMUP" "$url" "warmup-$name" "$@" \
        || die "$gen load failed (warm-up of $name)"
    local before after
    before=$(mock_calls)
    [[ $inst == - ]] || stats "$inst" "$RAW/$name.stats-before.json"
    printf '{"before": %s' "$(redis_gets)" >"$RAW/$name.redis.json"
    printf '{%s' "$(cpu_mark before)" >"$RAW/$name.cpu.json"
    local pid=""
    [[ $inst == "$A_BASE" ]] && pid=$A_PID
    [[ $inst == "$B_BASE" ]] && pid=$B_PID
    [[ -z $pid ]] || printf '{"ticks_per_s": %s, "before": %s' "$(getconf CLK_TCK)" \
        "$(server_ticks "$pid")" >"$RAW/$name.server-cpu.json"
    if [[ $sample == 1 ]]; then
        # The connections that carry chat calls to the mock, counted by the mock itself
        # (exact, and free: sampling /proc/net/tcp from here cost enough CPU to add
        # milliseconds to the p99 of both paths). The pause lets the probes' connections end.
        sleep 0.2
        printf '{"before": %s' "$(curl -sS --max-time 10 -X POST "$MOCK_BASE/mock/connections/reset-peak")" \
            >"$RAW/$name.conns.json"
    fi
    log "$name: ${DURATION}s at ${rate}/s -> $url${1:+ ($1)} ($gen)"
    load_run "$gen" "$RAW/$name.oha.json" "$rate" "$DURATION" "$url" "$name" "$@" \
        || die "$gen load failed ($name)"
    if [[ $sample == 1 ]]; then
        printf ', "after": %s}\n' "$(curl -sS --max-time 10 "$MOCK_BASE/mock/connections")" \
            >>"$RAW/$name.conns.json"
    fi
    printf ', "after": %s}\n' "$(redis_gets)" >>"$RAW/$name.redis.json"
    printf ', %s}\n' "$(cpu_mark after)" >>"$RAW/$name.cpu.json"
    [[ -z $pid ]] || printf ', "after": %s}\n' "$(server_ticks "$pid")" >>"$RAW/$name.server-cpu.json"
    [[ $inst == - ]] || stats "$inst" "$RAW/$name.stats-after.json"
    after=$(mock_calls)
    printf '{"before": %s, "after": %s}\n' "${before:-null}" "${after:-null}" >"$RAW/$name.mock.json"
    printf '{"name": "%s", "rate": %s, "url": "%s", "header": "%s", "generator": "%s"}\n' \
        "$name" "$rate" "$url" "${1:-}" "$gen" >>"$WINDOWS_JSON"
    python3 - "$RAW/$name.oha.json" <<'PY' >&2 || true
import json, sys
d = json.load(open(sys.argv[1]))
p = d.get("latencyPercentiles", {})
s = d.get("summary", {})
print(f"    achieved {s.get('requestsPerSec', 0):.0f}/s, p50 {p.get('p50', 0) * 1000:.2f} ms, "
      f"p99 {p.get('p99', 0) * 1000:.2f} ms, status {d.get('statusCodeDistribution')}, "
      f"errors {d.get('errorDistribution')}")
PY
}

for rate in "${RATES[@]}"; do
    # Both with the same generator and distinct bodies; through A each request is a MISS.
    measure "direct-$rate" "$rate" "$MOCK_URL/chat/completions" - 1 unique
    measure "proxied-$rate" "$rate" "$A_BASE/v1/chat/completions" "$A_BASE" 1 unique
done
measure hits-memory "$HIT_RATE" "$A_BASE/v1/chat/completions" "$A_BASE" 0 oha
measure hits-redis "$HIT_RATE" "$B_BASE/v1/chat/completions" "$B_BASE" 0 oha
log "streaming time to first event: $TTFB_N requests direct and $TTFB_N through A, alternating"
printf '{%s' "$(cpu_mark before)" >"$RAW/ttfb.cpu.json"
python3 "$BENCH_DIR/llm_proxy.py" ttfb --direct "$MOCK_URL/chat/completions" \
    --proxied "$A_BASE/v1/chat/completions" --tag "$STAMP" --n "$TTFB_N" --out "$RAW/ttfb.json" \
    || log "the time-to-first-event measurement failed (the report will say so)"
printf ', %s}\n' "$(cpu_mark after)" >>"$RAW/ttfb.cpu.json"

# --- report ----------------------------------------------------------------------------------
export STAMP COMMIT DIRTY NPROC OHA_VERSION REDIS_VERSION SERVER_BIN SERVER_BUILT MOCK_BIN \
    MOCK_BUILT MOCK_LATENCY_MS DURATION WARMUP CONNECTIONS HIT_RATE BODY_BYTES POOL HC_OK \
    HC_ROWS WINDOWS_JSON REDIS_URL CACHE_TTL
RATES_CSV=$(IFS=,; echo "${RATES[*]}")
export RATES_CSV
python3 - "$RAW/meta.json" <<'PY'
import json, os, sys
e = os.environ
meta = {
    "stamp": e["STAMP"], "commit": e["COMMIT"], "dirty": e["DIRTY"] == "true",
    "nproc": int(e["NPROC"]), "oha_version": e["OHA_VERSION"], "redis_version": e["REDIS_VERSION"],
    "redis_url": e["REDIS_URL"], "llm_cache_ttl_secs": int(e["CACHE_TTL"]),
    "server_bin": e["SERVER_BIN"], "server_built": e["SERVER_BUILT"],
    "mock_bin": e["MOCK_BIN"], "mock_built": e["MOCK_BUILT"],
    "mock_latency_ms": int(e["MOCK_LATENCY_MS"]), "mock_threads": "one runtime worker per core",
    "duration": int(e["DURATION"]), "warmup": int(e["WARMUP"]),
    "connections": int(e["CONNECTIONS"]), "rates": [int(r) for r in e["RATES_CSV"].split(",")],
    "hit_rate": int(e["HIT_RATE"]), "body_bytes": int(e["BODY_BYTES"]),
    "pool_max_idle_per_host": int(e["POOL"]),
    "header_check": {"ok": e["HC_OK"] == "1",
                     "rows": open(e["HC_ROWS"]).read().splitlines()},
    "windows": [json.loads(line) for line in open(e["WINDOWS_JSON"]) if line.strip()],
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
PY
REPORT_RC=0
python3 "$BENCH_DIR/llm_proxy.py" report --raw "$RAW" --meta "$RAW/meta.json" \
    --out "$SUMMARY_TXT" --json "$RAW/summary.json" || REPORT_RC=$?
echo "summary: $SUMMARY_TXT" >&2

for name in A B; do
    issues=$(sed 's/\x1b\[[0-9;]*m//g' "$RAW/server-$name.log" | grep -E '^[^ ]+ +(WARN|ERROR) ' || true)
    if [[ -n $issues ]]; then
        echo "note: server $name logged $(wc -l <<<"$issues") WARN/ERROR lines, the first ones:" >&2
        head -n 5 <<<"$issues" | cut -c1-300 >&2
    fi
done
exit "$REPORT_RC"
