#!/usr/bin/env bash
# Chaos test of the RabbitMQ backend: 100,000 messages with unique ids published with
# confirms while the broker is restarted and the consumer is killed with SIGKILL; reports
# lost, delivered twice, processed twice and the time to resume. See bench/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ME=queue_chaos.sh
MESSAGES=${GROUNDWORK_CHAOS_MESSAGES:-100000}
AMQP=${GROUNDWORK_CHAOS_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
PG_ADMIN=${GROUNDWORK_CHAOS_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
DOWN_SECS=${GROUNDWORK_CHAOS_DOWN_SECS:-5}

case "${1:-}" in
    -h | --help)
        cat <<EOF
usage: bash bench/queue_chaos.sh

Builds the load tool (cargo build --release -p groundwork-messaging --example queue_load),
then, on a fresh queue of the local RabbitMQ and a fresh PostgreSQL database gw_chaos:
  1. starts a consumer (chaos-consume): it records every delivery, processes each message
     once through an inbox (inbox row + effect row in one transaction), then acks;
  2. starts a publisher (chaos-publish): $MESSAGES messages with ids chaos-0.., in batches of
     200 with publisher confirms, writing every confirmed id to a file;
  3. when 20 % are confirmed: restarts the broker: stops the whole node (rabbitmqctl stop),
     waits $DOWN_SECS s, starts it again (rabbitmq-server -detached) and waits for it to
     boot (rabbitmqctl await_startup);
  4. when 50 % are confirmed: kills the consumer with SIGKILL and starts a new one;
  5. waits for the publisher, then for every confirmed message to be processed (120 s max);
  6. prints lost (confirmed, never processed: must be 0), delivered twice (must stay within
     a prefetch window, 50, per consumer interruption plus the unconfirmed window, one
     200-message batch: 300), processed twice
     (must be 0), and the time from the broker's return to the next confirm and delivery
     (each at most 30 s); exits 1 if any of these is missed.
Writes bench/results/queue-chaos-<UTC stamp>.json. Needs rabbitmqctl (run as root or the
rabbitmq user), psql, a running PostgreSQL. Environment: GROUNDWORK_CHAOS_MESSAGES,
GROUNDWORK_CHAOS_AMQP_URL, GROUNDWORK_CHAOS_POSTGRES_URL (admin URL), GROUNDWORK_CHAOS_DOWN_SECS.
EOF
        exit 0 ;;
    "") ;;
    *) echo "$ME: unexpected argument '$1' (try --help)" >&2; exit 2 ;;
esac

log() { echo "==> [$(date -u +%H:%M:%S)] $*" >&2; }
for tool in cargo psql rabbitmqctl; do
    command -v "$tool" >/dev/null || { echo "$ME: $tool is missing" >&2; exit 1; }
done

cd "$ROOT"
log "building the load tool"
cargo build --release -q -p groundwork-messaging --example queue_load
TOOL="$ROOT/target/release/examples/queue_load"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$ROOT/bench/results"
mkdir -p "$OUT"
WORK=$(mktemp -d)
QUEUE="chaos-$STAMP"
DB_NAME=gw_chaos
DB_URL="${PG_ADMIN%/*}/$DB_NAME"
CONFIRMED="$WORK/confirmed.txt"
: >"$CONFIRMED"
CONSUMER=""
PUBLISHER=""
cleanup() {
    [[ -n $CONSUMER ]] && kill -9 "$CONSUMER" 2>/dev/null || true
    [[ -n $PUBLISHER ]] && kill "$PUBLISHER" 2>/dev/null || true
    broker_running || start_broker || true
    for q in "$QUEUE" "$QUEUE.dead" "$QUEUE".retry.{0..3}; do
        rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $DB_NAME" -c "CREATE DATABASE $DB_NAME" >/dev/null

start_consumer() {
    "$TOOL" chaos-consume --amqp "$AMQP" --database "$DB_URL" --queue "$QUEUE" \
        >>"$WORK/consumer.log" 2>&1 &
    CONSUMER=$!
    log "consumer $CONSUMER started"
}
confirmed() { wc -l <"$CONFIRMED"; }
broker_running() { rabbitmqctl -q status >/dev/null 2>&1; }
# Starts the whole node (as .ci/run does) and waits until its applications run.
start_broker() {
    rabbitmq-server -detached >/dev/null 2>&1 || true
    # -detached returns before the node exists; await_startup needs a node to ask.
    local deadline=$(( $(date +%s) + 120 ))
    until rabbitmqctl -q ping >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || { echo "$ME: the broker did not start" >&2; return 1; }
        sleep 0.2
    done
    rabbitmqctl -q await_startup --timeout 120 >/dev/null
}
wait_confirmed() { # count
    while (( $(confirmed) < $1 )); do
        kill -0 "$PUBLISHER" 2>/dev/null || { echo "$ME: the publisher exited early" >&2; cat "$WORK/publisher.log" >&2; exit 1; }
        sleep 0.05
    done
}

start_consumer
sleep 1
"$TOOL" chaos-publish --amqp "$AMQP" --queue "$QUEUE" --messages "$MESSAGES" \
    --confirmed "$CONFIRMED" >"$WORK/publisher.out" 2>"$WORK/publisher.log" &
PUBLISHER=$!
log "publisher $PUBLISHER started: $MESSAGES messages to $QUEUE"

wait_confirmed $(( MESSAGES / 5 ))
log "$(confirmed) confirmed: stopping the broker node for ${DOWN_SECS}s"
rabbitmqctl stop >/dev/null
sleep "$DOWN_SECS"
start_broker
UP_US=$(date +%s%6N)
log "broker back"

wait_confirmed $(( MESSAGES / 2 ))
log "$(confirmed) confirmed: SIGKILL to consumer $CONSUMER"
kill -9 "$CONSUMER"
wait "$CONSUMER" 2>/dev/null || true
start_consumer

wait "$PUBLISHER"
PUBLISHER=""
log "publisher done: $(confirmed) confirmed"

processed() { psql -qAt "$DB_URL" -c "SELECT COUNT(DISTINCT message_id) FROM chaos_effects"; }
deadline=$(( $(date +%s) + 120 ))
while (( $(processed) < $(confirmed) )) && (( $(date +%s) < deadline )); do
    sleep 0.5
done
sleep 2 # let late redeliveries land before counting
kill -9 "$CONSUMER" 2>/dev/null || true
wait "$CONSUMER" 2>/dev/null || true
CONSUMER=""

"$TOOL" chaos-report --database "$DB_URL" --confirmed "$CONFIRMED" --broker-up-us "$UP_US" \
    | tee "$OUT/queue-chaos-$STAMP.json"
python3 - "$OUT/queue-chaos-$STAMP.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
# Delivered twice is bounded by what the consumer held unacked each time it was cut off (one
# prefetch window, 50, at the broker restart and again at the SIGKILL) plus what the
# publisher resends after the restart (its unconfirmed window: one 200-message batch).
BOUND = 2 * 50 + 200
ok = (r["lost"] == 0 and r["processed_twice"] == 0 and r["delivered_twice"] <= BOUND
      and (r["resume_publish_s"] or 99) <= 30 and (r["resume_consume_s"] or 99) <= 30)
print(("PASS" if ok else "MISS") + f": lost {r['lost']}, processed twice {r['processed_twice']}, "
      f"delivered twice {r['delivered_twice']}, resume publish {r['resume_publish_s']} s, "
      f"consume {r['resume_consume_s']} s")
sys.exit(0 if ok else 1)
PY
