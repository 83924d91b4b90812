#!/usr/bin/env bash
# Outage drill: restarts the machine's REAL PostgreSQL, then its REAL Redis, under a steady
# open-loop load on the release server, and measures what clients see. See bench/README.md.
#
# NOT for CI: it stops and starts the local PostgreSQL cluster and Redis server (root, or a
# user allowed to run pg_ctlcluster and redis-server). Every other client of those services on
# this machine sees the outages too.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
ME=outage.sh

usage() {
    cat <<'EOF'
usage: bash bench/outage.sh [-h|--help]

Outage drill for the groundwork server on PostgreSQL with Redis configured. It
  1. builds the release server (cargo build --release) and creates a dedicated PostgreSQL
     database (default groundwork_outage, dropped at the end);
  2. starts target/release/groundwork serve on a free 127.0.0.1 port with
     GROUNDWORK_DATABASE_URL on that database and GROUNDWORK_REDIS_URL on the local Redis,
     seeds 2,000 tools / 1,000 agents / 10 tools per agent (bench/seed.py) and warms the caches;
  3. runs two open-loop oha loads at once (latency corrected, per-request records kept):
       cached:   GET /api/v1/agents/{random}/tools   (served from the refreshing cache)
       uncached: GET /api/v1/agents/{random}         (a database read on every request)
     and polls GET /ready every 50 ms for the whole run;
  4. during the load: stops PostgreSQL (pg_ctlcluster <ver> main stop -m fast), waits the
     outage length, starts it again, waits for /ready 200, lets the load settle; then does the
     same with Redis (redis-cli shutdown nosave, the machine's redis-server command), waiting
     for the server's Redis client to reconnect (/api/v1/infra; /ready does not check Redis);
  5. prints, per outage and endpoint, failed requests, status mix and p50/p99 latency before,
     while down, while recovering and after; the time from the service accepting connections
     again to /ready 200 (Redis: to the server's client reconnecting); writes the summary to bench/results/outage-<UTC stamp>.txt (raw data
     in bench/results/outage-<UTC stamp>/).

PostgreSQL and Redis are started again whatever happens (trap on exit, Ctrl-C, TERM), and
the server and load generators are stopped. After a kill -9 of this script, restart them
by hand:
  pg_ctlcluster --skip-systemctl-redirect <ver> main start
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log

Exit status: 0 when every check holds (cached endpoint: no failed request; uncached: 503
while PostgreSQL is down, 200 after; /ready 200 within GROUNDWORK_OUTAGE_MAX_READY_S of the
service being back; Redis: the server's client reconnected as fast), 1 otherwise or on any error, 2 on bad usage.

Environment (defaults in brackets):
  GROUNDWORK_OUTAGE_SKIP_BUILD=1     use the existing binary, no cargo build
  GROUNDWORK_OUTAGE_BIN              server binary [<target dir>/release/groundwork]
  GROUNDWORK_OUTAGE_SECONDS          outage length: time between stop and start [5]
  GROUNDWORK_OUTAGE_PRE              seconds of load before the first outage [10]
  GROUNDWORK_OUTAGE_SETTLE           seconds of load after /ready is 200 again [10]
  GROUNDWORK_OUTAGE_RATE             total requests/s, both endpoints [1000]
  GROUNDWORK_OUTAGE_CACHED_PERCENT   share of the rate on the cached endpoint [50]
  GROUNDWORK_OUTAGE_CONNECTIONS      connections per load generator [32]
  GROUNDWORK_OUTAGE_REQUEST_TIMEOUT  oha per-request timeout, seconds [10]
  GROUNDWORK_OUTAGE_QUERY_TIMEOUT_MS server GROUNDWORK_DATABASE_QUERY_TIMEOUT_MS [2000]
  GROUNDWORK_OUTAGE_MAX_READY_S      check: /ready 200 at most this long after "back" [2]
  GROUNDWORK_OUTAGE_SERVICES         which outages, in order ["postgres redis"]
  GROUNDWORK_OUTAGE_PG_VERSION       cluster version [the one directory in /etc/postgresql]
  GROUNDWORK_OUTAGE_PG_CLUSTER       cluster name [main]
  GROUNDWORK_OUTAGE_PG_STOP_MODE     pg_ctlcluster stop mode: smart, fast, immediate [fast]
  GROUNDWORK_OUTAGE_PG_HOST / _PORT  [127.0.0.1] / [5432]
  GROUNDWORK_OUTAGE_PG_USER          [postgres]
  GROUNDWORK_OUTAGE_DB               database created and dropped [groundwork_outage]
  GROUNDWORK_OUTAGE_REDIS_HOST/_PORT [127.0.0.1] / [6379]
  GROUNDWORK_OUTAGE_REDIS_START      command that starts Redis [the machine's, see above]
  GROUNDWORK_OUTAGE_OUT              results directory [bench/results]
  GROUNDWORK_OUTAGE_RUST_LOG         RUST_LOG of the server [info]

Needs: root (or rights to pg_ctlcluster / redis-server), cargo, python3 (standard library),
psql, pg_isready, redis-cli, redis-server, oha >= 1.x (--urls-from-file, --db-url).
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
OUTAGE=$(posint GROUNDWORK_OUTAGE_SECONDS "${GROUNDWORK_OUTAGE_SECONDS:-5}")
PRE=$(posint GROUNDWORK_OUTAGE_PRE "${GROUNDWORK_OUTAGE_PRE:-10}")
SETTLE=$(posint GROUNDWORK_OUTAGE_SETTLE "${GROUNDWORK_OUTAGE_SETTLE:-10}")
RATE=$(posint GROUNDWORK_OUTAGE_RATE "${GROUNDWORK_OUTAGE_RATE:-1000}")
CACHED_PERCENT=${GROUNDWORK_OUTAGE_CACHED_PERCENT:-50}
[[ $CACHED_PERCENT =~ ^[0-9]+$ && $CACHED_PERCENT -ge 1 && $CACHED_PERCENT -le 99 ]] \
    || { echo "$ME: GROUNDWORK_OUTAGE_CACHED_PERCENT must be 1..99" >&2; exit 2; }
CONNECTIONS=$(posint GROUNDWORK_OUTAGE_CONNECTIONS "${GROUNDWORK_OUTAGE_CONNECTIONS:-32}")
REQUEST_TIMEOUT=$(posint GROUNDWORK_OUTAGE_REQUEST_TIMEOUT "${GROUNDWORK_OUTAGE_REQUEST_TIMEOUT:-10}")
QUERY_TIMEOUT_MS=$(posint GROUNDWORK_OUTAGE_QUERY_TIMEOUT_MS "${GROUNDWORK_OUTAGE_QUERY_TIMEOUT_MS:-2000}")
MAX_READY_S=$(posint GROUNDWORK_OUTAGE_MAX_READY_S "${GROUNDWORK_OUTAGE_MAX_READY_S:-2}")
read -r -a SERVICES <<<"${GROUNDWORK_OUTAGE_SERVICES:-postgres redis}"
[[ ${#SERVICES[@]} -gt 0 ]] || { echo "$ME: GROUNDWORK_OUTAGE_SERVICES is empty" >&2; exit 2; }
for s in "${SERVICES[@]}"; do
    [[ $s == postgres || $s == redis ]] \
        || { echo "$ME: GROUNDWORK_OUTAGE_SERVICES: unknown service '$s' (postgres, redis)" >&2; exit 2; }
done
PG_CLUSTER=${GROUNDWORK_OUTAGE_PG_CLUSTER:-main}
PG_STOP_MODE=${GROUNDWORK_OUTAGE_PG_STOP_MODE:-fast}
[[ $PG_STOP_MODE =~ ^(smart|fast|immediate)$ ]] \
    || { echo "$ME: GROUNDWORK_OUTAGE_PG_STOP_MODE must be smart, fast or immediate" >&2; exit 2; }
PG_HOST=${GROUNDWORK_OUTAGE_PG_HOST:-127.0.0.1}
PG_PORT=${GROUNDWORK_OUTAGE_PG_PORT:-5432}
PG_USER=${GROUNDWORK_OUTAGE_PG_USER:-postgres}
DB_NAME=${GROUNDWORK_OUTAGE_DB:-groundwork_outage}
[[ $DB_NAME =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "$ME: GROUNDWORK_OUTAGE_DB must be a plain lower-case identifier" >&2; exit 2; }
REDIS_HOST=${GROUNDWORK_OUTAGE_REDIS_HOST:-127.0.0.1}
REDIS_PORT=${GROUNDWORK_OUTAGE_REDIS_PORT:-6379}
REDIS_START=${GROUNDWORK_OUTAGE_REDIS_START:-redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log}
OUT_BASE=${GROUNDWORK_OUTAGE_OUT:-$BENCH_DIR/results}
SERVER_RUST_LOG=${GROUNDWORK_OUTAGE_RUST_LOG:-info}
AGENTS=1000
TOOLS=2000
PER_AGENT=10
POLL_INTERVAL=0.05
# Load length, fixed in advance (oha writes its records only at the end of a -z run): per
# outage the outage itself, the settle time, and 8 s for stopping, starting and recovering.
LOAD_SECONDS=$((PRE + ${#SERVICES[@]} * (OUTAGE + SETTLE + 8)))
CACHED_RATE=$((RATE * CACHED_PERCENT / 100))
UNCACHED_RATE=$((RATE - CACHED_RATE))
((CACHED_RATE > 0 && UNCACHED_RATE > 0)) || { echo "$ME: rate too low to split" >&2; exit 2; }

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
need psql "apt-get install -y postgresql-client"
need pg_isready "apt-get install -y postgresql-client"
need pg_ctlcluster "apt-get install -y postgresql-common"
need redis-cli "apt-get install -y redis-tools"
need redis-server "apt-get install -y redis-server"
need cargo "rustup (https://rustup.rs)"
[[ $missing == 0 ]] || die "install the tools above and run again"
for flag in --urls-from-file --db-url --output-format --latency-correction; do
    oha --help 2>/dev/null | grep -q -- "$flag" \
        || die "this oha has no $flag; install a newer one: cargo install oha --locked"
done
OHA_VERSION=$(oha --version 2>/dev/null | awk '{print $2}' || true)

if [[ -z ${GROUNDWORK_OUTAGE_PG_VERSION:-} ]]; then
    mapfile -t pg_versions < <(ls /etc/postgresql 2>/dev/null || true)
    [[ ${#pg_versions[@]} == 1 ]] \
        || die "set GROUNDWORK_OUTAGE_PG_VERSION (found in /etc/postgresql: ${pg_versions[*]:-nothing})"
    PG_VERSION=${pg_versions[0]}
else
    PG_VERSION=$GROUNDWORK_OUTAGE_PG_VERSION
fi
PG_CTL=(pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER")
PG_ADMIN_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/postgres"
DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB_NAME"
REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT"

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 1 >/dev/null 2>&1; }
redis_up() { [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
pg_up || die "PostgreSQL does not answer on $PG_HOST:$PG_PORT; start it first: ${PG_CTL[*]} start"
redis_up || die "Redis does not answer on $REDIS_HOST:$REDIS_PORT; start it first: $REDIS_START"
PG_SERVER_VERSION=$(psql "$PG_ADMIN_URL" -XAtqc 'show server_version' 2>/dev/null | awk '{print $1}')
REDIS_VERSION=$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" info server 2>/dev/null \
    | tr -d '\r' | sed -n 's/^redis_version://p')
"${PG_CTL[@]}" status >/dev/null 2>&1 \
    || die "pg_ctlcluster reports no running cluster $PG_VERSION/$PG_CLUSTER (is it the one on port $PG_PORT?)"

# --- build -----------------------------------------------------------------------------------
NPROC=$(nproc)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=false
[[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null || true) ]] || DIRTY=true
if [[ ${GROUNDWORK_OUTAGE_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release (may wait for the cargo build lock)"
    (cd "$ROOT" && cargo build --release)
fi
if [[ -n ${GROUNDWORK_OUTAGE_BIN:-} ]]; then
    SERVER_BIN=$GROUNDWORK_OUTAGE_BIN
else
    SERVER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/groundwork"
    [[ $SERVER_BIN = /* ]] || SERVER_BIN="$ROOT/$SERVER_BIN"
fi
[[ -x $SERVER_BIN ]] || die "no server binary at $SERVER_BIN (run without GROUNDWORK_OUTAGE_SKIP_BUILD=1)"
SERVER_BUILT=$(date -u -r "$SERVER_BIN" +%Y-%m-%dT%H:%M:%SZ)

# --- workspace, cleanup ----------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_BASE"
OUT_BASE=$(cd "$OUT_BASE" && pwd)
RAW="$OUT_BASE/outage-$STAMP"
SUMMARY_TXT="$OUT_BASE/outage-$STAMP.txt"
mkdir -p "$RAW"
EVENTS="$RAW/events.tsv"
POLLS="$RAW/ready.tsv"
SERVER_LOG="$RAW/server.log"
: >"$EVENTS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/groundwork-outage.XXXXXX")
SERVER_PID=""
POLLER_PID=""
CHILD_PID=""
OHA_PIDS=()
PG_STOPPED=0
REDIS_STOPPED=0
DB_CREATED=0

event() { # name -> "name<TAB>epoch" (bash's own clock, microseconds, no fork)
    printf '%s\t%s\n' "$1" "$EPOCHREALTIME" >>"$EVENTS"
}
event_at() { printf '%s\t%s\n' "$1" "$2" >>"$EVENTS"; }
event_time() { awk -F'\t' -v n="$1" '$1 == n {t = $2} END {print t}' "$EVENTS"; }

# Runs a command in the background and waits for it: bash runs a trap only once the
# foreground command has finished but interrupts `wait` at once, so Ctrl-C/TERM restores the
# services right away.
run() {
    "$@" &
    CHILD_PID=$!
    local rc=0
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}
nap() { run sleep "$1"; }
sleep_until() { # epoch
    local d
    d=$(awk -v t="$1" -v n="$EPOCHREALTIME" 'BEGIN { d = t - n; if (d < 0) d = 0; printf "%.3f", d }')
    nap "$d"
}

start_postgres() { "${PG_CTL[@]}" start; }
start_redis() { bash -c "$REDIS_START"; }

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
    trap '' INT TERM # a second Ctrl-C must not cut the restore short
    trap - EXIT
    if [[ -n $CHILD_PID ]]; then stop_pid "$CHILD_PID" "child" 5; fi
    for pid in "${OHA_PIDS[@]}"; do stop_pid "$pid" "oha" 5; done
    # The services first: they matter more than anything else here.
    if [[ $PG_STOPPED == 1 ]] && ! pg_up; then
        echo "$ME: restarting PostgreSQL ($PG_VERSION/$PG_CLUSTER)" >&2
        start_postgres >&2 || echo "$ME: pg_ctlcluster start failed" >&2
    fi
    if [[ $REDIS_STOPPED == 1 ]] && ! redis_up; then
        echo "$ME: restarting Redis" >&2
        start_redis >&2 || echo "$ME: redis-server failed to start" >&2
    fi
    for _ in $(seq 1 300); do # up to 30 s
        pg_up && redis_up && break
        sleep 0.1
    done
    stop_pid "$POLLER_PID" "/ready poller" 2
    stop_pid "$SERVER_PID" "server" 12
    if [[ $DB_CREATED == 1 ]]; then
        psql "$PG_ADMIN_URL" -XqAt -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 \
            && echo "$ME: dropped database $DB_NAME" >&2 \
            || { echo "$ME: could not drop database $DB_NAME" >&2; rc=1; }
    fi
    rm -rf "$WORK"
    local pg_state redis_state
    pg_state=$(pg_isready -h "$PG_HOST" -p "$PG_PORT" 2>&1 || true)
    redis_state=$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>&1 || true)
    echo "$ME: services after the run: pg_isready: $pg_state; redis-cli ping: $redis_state" >&2
    if ! pg_up || ! redis_up; then
        echo "$ME: WARNING: a service is NOT running again; start it by hand (see --help)" >&2
        rc=1
    fi
    if [[ $rc != 0 ]]; then
        echo "$ME: FAILED (exit $rc); raw data and server log in $RAW" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- database, server ------------------------------------------------------------------------
log "creating database $DB_NAME on $PG_HOST:$PG_PORT"
DB_CREATED=1
psql "$PG_ADMIN_URL" -XqAt -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" \
    -c "CREATE DATABASE $DB_NAME" >/dev/null || die "cannot create database $DB_NAME"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
BASE="http://127.0.0.1:$PORT"
log "starting $SERVER_BIN on 127.0.0.1:$PORT (database $DATABASE_URL, Redis $REDIS_URL), log $SERVER_LOG"
(
    cd "$WORK"
    exec env -u GROUNDWORK_API_KEYS \
        GROUNDWORK_BIND="127.0.0.1:$PORT" \
        GROUNDWORK_DATABASE_URL="$DATABASE_URL" \
        GROUNDWORK_REDIS_URL="$REDIS_URL" \
        GROUNDWORK_DATABASE_QUERY_TIMEOUT_MS="$QUERY_TIMEOUT_MS" \
        GROUNDWORK_STORAGE_URL="file://$WORK/files" \
        GROUNDWORK_LOG_FORMAT=text \
        RUST_LOG="$SERVER_RUST_LOG" \
        "$SERVER_BIN" serve
) >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

python3 - "$BASE/ready" "$SERVER_PID" <<'PY' || { tail -n 30 "$SERVER_LOG" >&2; die "server did not become ready"; }
import sys, time, urllib.request, urllib.error
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
        with opener.open(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except (OSError, urllib.error.HTTPError):
        pass
    time.sleep(0.1)
sys.exit("no 200 from /ready within 60 s")
PY
log "server ready"

# --- seed, warm ------------------------------------------------------------------------------
log "seeding $TOOLS tools, $AGENTS agents, $PER_AGENT tools per agent"
run python3 "$BENCH_DIR/seed.py" --base-url "$BASE" --tools "$TOOLS" --agents "$AGENTS" \
    --per-agent "$PER_AGENT" --workers 8 >"$RAW/seed.json" || die "seeding failed"

log "warming the caches (agent_tools, agent_runtime: agents 1..$AGENTS)"
python3 - "$BASE" "$AGENTS" "$RAW/caches-before.json" <<'PY' || die "warming the caches failed"
import json, sys, urllib.request
base, agents, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
body = json.dumps({"keys": list(range(1, agents + 1))}).encode()
for cache in ("agent_tools", "agent_runtime"):
    req = urllib.request.Request(f"{base}/api/v1/cache/{cache}/warm", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    with opener.open(req, timeout=60) as r:
        print(f"warm {cache}: {json.load(r)}", file=sys.stderr)
with opener.open(f"{base}/api/v1/cache", timeout=10) as r:
    stats = json.load(r)
with open(out, "w") as f:
    json.dump(stats, f, indent=2)
PY

snapshot() { # name: /api/v1/infra and /api/v1/cache as JSON, best effort
    python3 - "$BASE" "$RAW/$1.json" <<'PY' || true
import json, sys, urllib.request
base, out = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
doc = {}
for path in ("/api/v1/infra", "/api/v1/cache"):
    try:
        with opener.open(base + path, timeout=3) as r:
            doc[path] = json.load(r)
    except Exception as e:  # a snapshot never fails the run
        doc[path] = {"error": str(e)}
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
PY
}
snapshot infra-before

# --- load, poller ----------------------------------------------------------------------------
for ((i = 1; i <= AGENTS; i++)); do echo "$BASE/api/v1/agents/$i/tools"; done >"$WORK/urls-cached.txt"
for ((i = 1; i <= AGENTS; i++)); do echo "$BASE/api/v1/agents/$i"; done >"$WORK/urls-uncached.txt"

log "polling /ready (and /api/v1/infra) every ${POLL_INTERVAL}s"
python3 "$BENCH_DIR/outage.py" poll "$BASE/ready" "$POLLS" --infra "$BASE/api/v1/infra" \
    --interval "$POLL_INTERVAL" &
POLLER_PID=$!

start_load() { # name rate
    local name=$1 rate=$2
    event "load_start_$name"
    oha --no-tui --output-format json -o "$RAW/oha-$name.json" --db-url "$RAW/oha-$name.sqlite" \
        -q "$rate" -z "${LOAD_SECONDS}s" -c "$CONNECTIONS" --latency-correction \
        -t "${REQUEST_TIMEOUT}s" --urls-from-file "$WORK/urls-$name.txt" \
        >"$RAW/oha-$name.log" 2>&1 &
    OHA_PIDS+=($!)
}
log "load: ${CACHED_RATE}/s cached + ${UNCACHED_RATE}/s uncached for ${LOAD_SECONDS}s ($CONNECTIONS connections each)"
start_load cached "$CACHED_RATE"
start_load uncached "$UNCACHED_RATE"
LOAD_T0=$(event_time load_start_cached)
LOAD_END_AT=$(awk -v t="$LOAD_T0" -v d="$LOAD_SECONDS" 'BEGIN { printf "%.6f", t + d }')

wait_for() { # what, seconds, probe command... -> returns 1 on timeout; polls every 50 ms
    local what=$1 limit=$2
    shift 2
    local deadline
    deadline=$(awk -v n="$EPOCHREALTIME" -v l="$limit" 'BEGIN { printf "%d", n + l }')
    until "$@"; do
        if (( ${EPOCHREALTIME%.*} >= deadline )); then
            echo "$ME: $what: not within $limit s" >&2
            return 1
        fi
        sleep 0.05
    done
}
pg_down() { ! pg_up; }
redis_down() { ! redis_up; }

# Recovery after "<service>_back": /ready 200 for PostgreSQL; for Redis, which /ready does
# not check, the server's Redis client connected again (/api/v1/infra) -> event <service>_ready.
wait_recovered() { # service
    local svc=$1 what=ready t
    [[ $svc == redis ]] && what=redis
    if t=$(python3 "$BENCH_DIR/outage.py" wait-ready "$POLLS" "$(event_time "${svc}_back")" \
        --what "$what" --timeout 60); then
        event_at "${svc}_ready" "$t"
        log "$svc: server recovered ($what)"
    else
        log "$svc: server did not recover ($what) within 60 s of $svc being back"
    fi
}

outage_postgres() {
    log "postgres: stopping (${PG_CTL[*]} stop -m $PG_STOP_MODE)"
    PG_STOPPED=1
    event postgres_stop_begin
    "${PG_CTL[@]}" stop -m "$PG_STOP_MODE" >&2 || die "pg_ctlcluster stop failed"
    wait_for "PostgreSQL stopping" 30 pg_down || die "PostgreSQL still answers after stop"
    event postgres_down
    log "postgres: down; waiting ${OUTAGE}s"
    nap "$OUTAGE"
    log "postgres: starting"
    event postgres_start_begin
    # pg_ctlcluster start waits for the server; watch the port at the same time, so "back" is
    # when it accepts connections, not when the command returns.
    start_postgres >"$RAW/pg-start.log" 2>&1 &
    local start_pid=$!
    wait_for "PostgreSQL accepting connections" 60 pg_up || die "PostgreSQL did not come back"
    event postgres_back
    wait "$start_pid" || die "pg_ctlcluster start failed: $(cat "$RAW/pg-start.log")"
    PG_STOPPED=0
    log "postgres: accepting connections"
    wait_recovered postgres
}

outage_redis() {
    log "redis: stopping (redis-cli shutdown nosave)"
    REDIS_STOPPED=1
    event redis_stop_begin
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    wait_for "Redis stopping" 30 redis_down || die "Redis still answers after shutdown"
    event redis_down
    log "redis: down; waiting ${OUTAGE}s"
    nap "$OUTAGE"
    log "redis: starting ($REDIS_START)"
    event redis_start_begin
    start_redis >"$RAW/redis-start.log" 2>&1 || die "redis-server did not start: $(cat "$RAW/redis-start.log")"
    wait_for "Redis answering PING" 60 redis_up || die "Redis did not come back"
    event redis_back
    REDIS_STOPPED=0
    log "redis: answering PING"
    wait_recovered redis
}

sleep_until "$(awk -v t="$LOAD_T0" -v p="$PRE" 'BEGIN { printf "%.6f", t + p }')"
for svc in "${SERVICES[@]}"; do
    snapshot "infra-before-$svc"
    "outage_$svc"
    nap "$SETTLE"
    snapshot "infra-after-$svc"
done
if (( ${EPOCHREALTIME%.*} > ${LOAD_END_AT%.*} )); then
    log "WARNING: the outages took longer than the load ran; the last 'after' window is short"
fi
log "waiting for the load to end"
for pid in "${OHA_PIDS[@]}"; do
    wait "$pid" || log "oha (pid $pid) exited with status $?"
done
OHA_PIDS=()
event load_end
stop_pid "$POLLER_PID" "/ready poller" 2
POLLER_PID=""
for name in cached uncached; do
    [[ -s $RAW/oha-$name.json ]] || die "oha ($name) wrote no results; see $RAW/oha-$name.log"
done

# --- report ----------------------------------------------------------------------------------
python3 - "$RAW/meta.json" <<PY
import json, sys
meta = {
    "stamp": "$STAMP", "commit": "$COMMIT", "dirty": "$DIRTY" == "true", "nproc": $NPROC,
    "oha_version": "$OHA_VERSION", "pg_version": "$PG_SERVER_VERSION",
    "redis_version": "$REDIS_VERSION", "server_bin": "$SERVER_BIN", "server_built": "$SERVER_BUILT",
    "database_url": "$DATABASE_URL", "redis_url": "$REDIS_URL",
    "query_timeout_ms": $QUERY_TIMEOUT_MS, "request_timeout_s": $REQUEST_TIMEOUT,
    "agents": $AGENTS, "seed": json.load(open("$RAW/seed.json")),
    "load_seconds": $LOAD_SECONDS, "pre_seconds": $PRE, "settle_seconds": $SETTLE,
    "outage_seconds": $OUTAGE, "poll_interval_s": $POLL_INTERVAL,
    "max_back_to_ready_s": $MAX_READY_S,
    "services": "${SERVICES[*]}".split(),
    "commands": {
        "postgres": "${PG_CTL[*]} stop -m $PG_STOP_MODE; sleep $OUTAGE; ${PG_CTL[*]} start",
        "redis": "redis-cli -p $REDIS_PORT shutdown nosave; sleep $OUTAGE; redis-server --daemonize yes ...",
    },
    "endpoints": [
        {"name": "cached", "label": "cached   GET /api/v1/agents/{id}/tools", "expect": "cached",
         "rate": $CACHED_RATE, "connections": $CONNECTIONS},
        {"name": "uncached", "label": "uncached GET /api/v1/agents/{id}", "expect": "uncached",
         "rate": $UNCACHED_RATE, "connections": $CONNECTIONS},
    ],
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
PY
REPORT_RC=0
python3 "$BENCH_DIR/outage.py" report --raw "$RAW" --meta "$RAW/meta.json" \
    --out "$SUMMARY_TXT" --json "$RAW/summary.json" || REPORT_RC=$?
echo "summary: $SUMMARY_TXT" >&2

# The server colours its text log; strip the escape codes before looking for levels.
LOG_ISSUES=$(sed 's/\x1b\[[0-9;]*m//g' "$SERVER_LOG" | grep -E '^[^ ]+ +(WARN|ERROR) ' || true)
if [[ -n $LOG_ISSUES ]]; then
    echo "note: the server log has $(wc -l <<<"$LOG_ISSUES") WARN/ERROR lines (expected during outages), the first ones:" >&2
    head -n 10 <<<"$LOG_ISSUES" | cut -c1-300 >&2
fi
exit "$REPORT_RC"
