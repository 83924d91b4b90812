#!/usr/bin/env bash
# Queue throughput and latency: RabbitMQ publishing with confirms (1 KB persistent messages,
# beside lapin alone), database queue throughput with no-op jobs on PostgreSQL and SQLite,
# and enqueue-to-start latency at 1,000 jobs/s. See bench/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ME=queue_load.sh
AMQP=${GROUNDWORK_LOAD_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
PG_ADMIN=${GROUNDWORK_LOAD_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}

case "${1:-}" in
    -h | --help)
        cat <<EOF
usage: bash bench/queue_load.sh

Builds the load tool (cargo build --release -p groundwork-messaging --example queue_load) and
runs, one after the other on the local services:
  1. amqp-publish: 100,000 persistent 1 KB messages with publisher confirms in batches of
     1,000 through AmqpQueue::publish_batch, then the same through lapin alone (one confirm
     channel, publish all then await all confirms, a quorum queue as ours); msg/s of both;
  2. db-throughput on PostgreSQL (database gw_load, recreated) and SQLite (temporary file):
     2 producers enqueue 50,000 no-op jobs in batches of 100 while 2 consumers claim them in
     batches of 200 and ack; enqueue rate and end-to-end jobs/s (first enqueue to last ack);
  3. db-latency on both: one job at a time at 1,000 jobs/s for 20 s (open loop), each
     carrying its enqueue time; p50/p99/max from enqueue to the consumer starting it.
Prints one JSON line per measurement, checks the goals (>= 10,000 msg/s published;
>= 5,000 jobs/s on PostgreSQL, >= 2,000 on SQLite) and writes
bench/results/queue-load-<UTC stamp>.jsonl. Environment: GROUNDWORK_LOAD_AMQP_URL,
GROUNDWORK_LOAD_POSTGRES_URL (admin URL of the server to use).
EOF
        exit 0 ;;
    "") ;;
    *) echo "$ME: unexpected argument '$1' (try --help)" >&2; exit 2 ;;
esac

cd "$ROOT"
cargo build --release -q -p groundwork-messaging --example queue_load
TOOL="$ROOT/target/release/examples/queue_load"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
OUT="bench/results/queue-load-$STAMP.jsonl"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PG_URL="${PG_ADMIN%/*}/gw_load"
psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS gw_load" -c "CREATE DATABASE gw_load" >/dev/null 2>&1

{
    "$TOOL" amqp-publish --amqp "$AMQP" --messages 100000 --size 1024 --batch 1000
    "$TOOL" db-throughput --database "$PG_URL" --jobs 50000
    "$TOOL" db-throughput --database "sqlite://$WORK/queue.db" --jobs 50000
    "$TOOL" db-latency --database "$PG_URL" --rate 1000 --seconds 20
    "$TOOL" db-latency --database "sqlite://$WORK/latency.db" --rate 1000 --seconds 20
} | tee "$OUT"

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
checks = []
for r in rows:
    if r["bench"] == "amqp-publish":
        checks.append((r["groundwork_msgs_per_s"] >= 10_000, f"publish {r['groundwork_msgs_per_s']:.0f} msg/s >= 10,000 (lapin alone {r['lapin_msgs_per_s']:.0f})"))
    elif r["bench"] == "db-throughput":
        goal = 5_000 if r["backend"] == "postgres" else 2_000
        checks.append((r["end_to_end_jobs_per_s"] >= goal, f"{r['backend']}: {r['end_to_end_jobs_per_s']:.0f} jobs/s >= {goal}"))
    elif r["bench"] == "db-latency":
        checks.append((r["started"] == r["jobs"], f"{r['backend']}: enqueue-to-start p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms at {r['rate']}/s ({r['started']} of {r['jobs']} started)"))
for ok, text in checks:
    print(("[PASS] " if ok else "[MISS] ") + text)
sys.exit(0 if len(checks) == 5 and all(ok for ok, _ in checks) else 1)
PY
