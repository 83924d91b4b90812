#!/usr/bin/env bash
# File storage throughput and memory on the local disk: uploads and downloads of 100 MiB and
# 1 GiB through the server and through groundwork-storage, beside cp, cp+sync and
# object_store alone in the same run. See bench/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ME=storage.sh

case "${1:-}" in
    -h | --help)
        cat <<USAGE
usage: bash bench/storage.sh

Builds the release server and the tool (cargo build --release -p groundwork-server, then
-p groundwork-storage --example storage_bench), measures SHA-256 alone on 1 GiB, then for
100 MiB and 1 GiB (random bytes, in the page cache) starts a fresh server on the local disk
and runs GROUNDWORK_STORAGE_BENCH_RUNS rounds (default 5) of, one after the other:
  cp, cp + sync (durable, as our uploads are), object_store alone (WriteMultipart into
  LocalFileSystem with fsync, no hash), FileStore::put (SHA-256, limit, durable),
  FileStore::get into a fsynced file, curl upload (POST /api/v1/files, raw body),
  curl download into a file and into /dev/null.
Prints medians, per-round ratios (median) and peak memory, checks the goals (>= 80 % of cp,
SHA-256 <= 10 %, <= 64 MiB) and writes bench/results/storage-<UTC stamp>.json.
Environment: GROUNDWORK_STORAGE_BENCH_RUNS, GROUNDWORK_STORAGE_BENCH_SIZES (default
100M,1G), GROUNDWORK_STORAGE_BENCH_DIR (work directory on the disk to measure; default a
new directory under \$ROOT/target, removed afterwards). Needs curl and python3 (3.9+).
USAGE
        exit 0 ;;
    "") ;;
    *) echo "$ME: unexpected argument '$1' (try --help)" >&2; exit 2 ;;
esac

for cmd in curl python3 cp sync; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "$ME: missing $cmd" >&2; exit 1; }
done

cd "$ROOT"
cargo build --release -q -p groundwork-server
cargo build --release -q -p groundwork-storage --example storage_bench
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
TOOL="$TARGET_DIR/release/examples/storage_bench"
SERVER="$TARGET_DIR/release/groundwork"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
OUT="bench/results/storage-$STAMP.json"
if [[ -n ${GROUNDWORK_STORAGE_BENCH_DIR:-} ]]; then
    WORK=$GROUNDWORK_STORAGE_BENCH_DIR
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "$TARGET_DIR/storage-bench.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
WORK=$(cd "$WORK" && pwd)
echo "==> work directory $WORK ($(df -h "$WORK" | awk 'NR==2 {print $4 " free on " $1}'))" >&2

SHA=$("$TOOL" sha256 --bytes 1073741824)
echo "==> SHA-256 alone (sha2, one thread, data in memory): $SHA" >&2

python3 bench/storage.py --tool "$TOOL" --server "$SERVER" --work "$WORK" \
    --runs "${GROUNDWORK_STORAGE_BENCH_RUNS:-5}" \
    --sizes "${GROUNDWORK_STORAGE_BENCH_SIZES:-100M,1G}" \
    --sha-bench "$SHA" --out "$OUT"
