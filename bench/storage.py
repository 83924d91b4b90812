#!/usr/bin/env python3
"""File storage throughput and memory, driven by bench/storage.sh (see its --help).

For each size, a fresh release server on the local disk, then RUNS rounds, each running the
peers and our operations one after the other on the same source file (so that every ratio
compares runs a few seconds apart):

  cp           cp SRC DST                         (page cache, not durable)
  cp+sync      cp SRC DST && sync DST DIR         (durable, as our uploads are)
  raw-put      object_store alone: WriteMultipart into LocalFileSystem, fsync, no hash
  put          groundwork-storage FileStore::put: SHA-256, size limit, durable
  get          FileStore::get into a file, fsynced
  http-upload  curl -T SRC -X POST /api/v1/files  (server: stream, hash, fsync, row)
  http-download curl -o DST /api/v1/files/{id}    (client writes the page cache, like cp)
  http-download-null curl -o /dev/null            (the server's side alone)

Prints a table and one JSON document; checks the goals of issue 7. Standard library only.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

MIB = 1024 * 1024


def log(message):
    print(f"==> {message}", file=sys.stderr, flush=True)


def parse_size(text):
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def label(size):
    return f"{size // (1024 * MIB)} GiB" if size >= 1024 * MIB else f"{size // MIB} MiB"


def make_source(path, size):
    """A file of `size` random bytes (written once, reused), and its SHA-256."""
    digest = hashlib.sha256()
    if os.path.exists(path) and os.path.getsize(path) == size:
        with open(path, "rb") as f:
            while block := f.read(8 * MIB):
                digest.update(block)
        return digest.hexdigest()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MIB))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def timed(cmd, **kwargs):
    started = time.perf_counter()
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, **kwargs)
    return time.perf_counter() - started, done.stdout.decode()


def tool(binary, *args):
    _, out = timed([binary, *args])
    return json.loads(out.strip().splitlines()[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, field):
    """A memory figure of a process from /proc, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, binary, work, name):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(work, f"server-{name}.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWORK_")}
        env.update(
            GROUNDWORK_BIND=f"127.0.0.1:{self.port}",
            GROUNDWORK_DATABASE_URL=f"sqlite://{work}/server-{name}.db",
            GROUNDWORK_STORAGE_URL=f"file://{work}/server-{name}-files",
            GROUNDWORK_STORAGE_MAX_UPLOAD_BYTES=str(8 * 1024 * MIB),
            GROUNDWORK_LOG_FORMAT="text",
            RUST_LOG="warn",
        )
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited during start-up; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not become healthy; see {self.log_path}")
            time.sleep(0.1)
        self.baseline_kib = proc_status(self.proc.pid, "VmRSS")

    def peak_kib(self):
        return proc_status(self.proc.pid, "VmHWM")

    def delete(self, file_id):
        request = urllib.request.Request(f"{self.base}/api/v1/files/{file_id}", method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 204, r.status

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def curl_upload(server, src):
    seconds, out = timed(
        [
            "curl", "-sS", "-X", "POST", "-T", src,
            "-H", "X-File-Name: bench.bin",
            "-H", "Content-Type: application/octet-stream",
            "-H", "Expect:",
            "-w", "\n%{http_code}",
            f"{server.base}/api/v1/files",
        ]
    )
    body, status = out.rsplit("\n", 1)
    if status != "201":
        raise SystemExit(f"upload answered {status}: {body[:300]}")
    return seconds, json.loads(body)


def curl_download(server, file_id, dest):
    seconds, out = timed(
        ["curl", "-sS", "-o", dest, "-w", "%{http_code}", f"{server.base}/api/v1/files/{file_id}"]
    )
    if out != "200":
        raise SystemExit(f"download answered {out}")
    return seconds


def remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def run_size(args, size):
    work = args.work
    src = os.path.join(work, f"src-{size}.bin")
    log(f"{label(size)}: source file")
    sha = make_source(src, size)
    dst = os.path.join(work, "dst", "copy.bin")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    lib_dir = os.path.join(work, "lib-store")
    raw_dir = os.path.join(work, "raw-store")
    server = Server(args.server, work, str(size))
    rounds = []
    peak_put_kib = []
    try:
        for n in range(args.runs):
            r = {}
            remove(dst)
            r["cp"], _ = timed(["cp", src, dst])
            remove(dst)
            r["cp+sync"], _ = timed(
                ["sh", "-c", 'cp "$1" "$2" && sync "$2" "$3"', "sh", src, dst, os.path.dirname(dst)]
            )
            remove(dst)

            raw = tool(args.tool, "raw-put", "--file", src, "--dir", raw_dir)
            r["raw-put"] = raw["seconds"]
            remove(raw_dir)
            put = tool(args.tool, "put", "--file", src, "--dir", lib_dir)
            if put["sha256"] != sha:
                raise SystemExit(f"put computed {put['sha256']}, expected {sha}")
            r["put"] = put["seconds"]
            peak_put_kib.append(put["peak_rss_kib"])
            get = tool(args.tool, "get", "--dir", lib_dir, "--key", put["key"], "--out", dst)
            r["get"] = get["seconds"]
            if os.path.getsize(dst) != size:
                raise SystemExit("get wrote a file of the wrong size")
            remove(dst)
            remove(lib_dir)

            r["http-upload"], meta = curl_upload(server, src)
            if meta["sha256"] != sha or meta["size"] != size:
                raise SystemExit(f"the server stored {meta['size']} bytes, {meta['sha256']}")
            r["http-download"] = curl_download(server, meta["id"], dst)
            if os.path.getsize(dst) != size:
                raise SystemExit("the download has the wrong size")
            remove(dst)
            r["http-download-null"] = curl_download(server, meta["id"], "/dev/null")
            server.delete(meta["id"])
            rounds.append(r)
            log(f"{label(size)} round {n + 1}/{args.runs}: "
                + ", ".join(f"{k} {v:.3f}s" for k, v in r.items()))
        server_peak = server.peak_kib()
        server_base = server.baseline_kib
    finally:
        server.stop()
    return summarize(size, rounds, server_base, server_peak, max(peak_put_kib))


def summarize(size, rounds, server_base_kib, server_peak_kib, tool_peak_kib):
    def med(key):
        return statistics.median(r[key] for r in rounds)

    def ratio(ours, peer):
        # Throughput of ours as a share of the peer's, per round, then the median.
        return statistics.median(r[peer] / r[ours] for r in rounds)

    return {
        "size_bytes": size,
        "rounds": len(rounds),
        "median_seconds": {k: round(med(k), 4) for k in rounds[0]},
        "median_mb_per_s": {k: round(size / med(k) / 1e6, 1) for k in rounds[0]},
        "ratios": {
            "http_upload_vs_cp_sync": round(ratio("http-upload", "cp+sync"), 3),
            "http_upload_vs_cp": round(ratio("http-upload", "cp"), 3),
            "put_vs_cp_sync": round(ratio("put", "cp+sync"), 3),
            "put_vs_raw_put": round(ratio("put", "raw-put"), 3),
            "get_vs_cp_sync": round(ratio("get", "cp+sync"), 3),
            "http_download_vs_cp": round(ratio("http-download", "cp"), 3),
            "http_download_null_vs_cp": round(ratio("http-download-null", "cp"), 3),
        },
        "memory_mib": {
            "server_baseline": round(server_base_kib / 1024, 1),
            "server_peak": round(server_peak_kib / 1024, 1),
            "server_peak_over_baseline": round((server_peak_kib - server_base_kib) / 1024, 1),
            "library_put_process_peak": round(tool_peak_kib / 1024, 1),
        },
        "rounds_seconds": rounds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="100M,1G")
    parser.add_argument("--out", required=True)
    parser.add_argument("--sha-bench", default="")
    args = parser.parse_args()

    results = [run_size(args, parse_size(s)) for s in args.sizes.split(",")]
    document = {"results": results}
    if args.sha_bench:
        document["sha256_alone"] = json.loads(args.sha_bench)

    print()
    header = f"{'':28}" + "".join(f"{label(r['size_bytes']):>14}" for r in results)
    print(header)
    for key in results[0]["median_seconds"]:
        print(f"{key + ' (s, median)':28}"
              + "".join(f"{r['median_seconds'][key]:>14.3f}" for r in results))
    for key in results[0]["ratios"]:
        print(f"{key:28}" + "".join(f"{r['ratios'][key]:>14.2f}" for r in results))
    for key in results[0]["memory_mib"]:
        print(f"{key + ' (MiB)':28}" + "".join(f"{r['memory_mib'][key]:>14.1f}" for r in results))

    print()
    goals = []
    for r in results:
        name = label(r["size_bytes"])
        ratios, memory = r["ratios"], r["memory_mib"]
        goals += [
            (f"{name}: HTTP upload >= 80% of cp+sync", ratios["http_upload_vs_cp_sync"] >= 0.8),
            (f"{name}: HTTP upload >= 80% of cp", ratios["http_upload_vs_cp"] >= 0.8),
            (f"{name}: HTTP download >= 80% of cp", ratios["http_download_vs_cp"] >= 0.8),
            (f"{name}: SHA-256 and limit cost <= 10% (put vs object_store alone)",
             ratios["put_vs_raw_put"] >= 0.9),
            (f"{name}: server peak memory <= 64 MiB", memory["server_peak"] <= 64),
        ]
    for goal, ok in goals:
        print(f"{'met    ' if ok else 'NOT MET'}  {goal}")
    document["goals"] = {goal: ok for goal, ok in goals}
    with open(args.out, "w") as f:
        json.dump(document, f, indent=2)
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
