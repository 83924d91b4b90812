#!/usr/bin/env python3
"""Seed a fresh Groundwork server through its HTTP API for the tools-endpoint load test.

Creates N tools (config of roughly 500 bytes each), M agents, and attaches K distinct tools to
every agent (a share of the attachments with a config_override), then checks that a few random
agents answer `GET /api/v1/agents/{id}/tools` with K items.

Python 3.11 standard library only: one keep-alive `http.client` connection per worker thread,
a pool of worker threads. The server must be fresh (empty database): the load generators
address agents by id 1..M, so the script fails unless the created agents got exactly those ids.

Prints one line of JSON on stdout (counts, timings); progress and errors go to stderr.
Exit status 0 on success, 1 on any failure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


class SeedError(Exception):
    """A request that did not get the expected answer."""


class Client:
    """One keep-alive HTTP/1.1 connection per thread, reopened when the server drops it."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise SystemExit(f"seed.py: base URL must be http://host:port, got {base_url!r}")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.prefix = parsed.path.rstrip("/")
        self.timeout = timeout
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
        self.local.conn = None

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        """Send one request; returns (status, decoded JSON or None). Retries once on a
        dropped keep-alive connection (only for a connection-level failure, before any answer)."""
        payload = None
        headers = {"accept": "application/json"}
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["content-type"] = "application/json"
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, self.prefix + path, body=payload, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop()
                if attempt == 2:
                    raise
                continue
            if resp.will_close:
                self._drop()
            data = json.loads(raw) if raw else None
            return resp.status, data
        raise AssertionError("unreachable")

    def expect(self, method: str, path: str, body: object | None, statuses: tuple[int, ...]) -> object:
        status, data = self.request(method, path, body)
        if status not in statuses:
            raise SeedError(f"{method} {path} -> {status}, expected {statuses}: {data!r}")
        return data


def tool_config(n: int, rng: random.Random) -> dict:
    """A tool config of roughly 500 bytes once serialized (compact JSON)."""
    return {
        "url": f"https://tools.internal.example/api/v2/tool-{n}/invoke",
        "method": rng.choice(["GET", "POST", "PUT"]),
        "headers": {
            "accept": "application/json",
            "x-tool-id": f"tool-{n}",
            "x-client": "groundwork-bench",
        },
        "description": (
            f"Benchmark tool number {n}: calls an internal HTTP service, "
            "parses the JSON answer and returns the fields the agent asked for."
        ),
        "timeout_s": rng.choice([5, 10, 15, 30]),
        "connect_timeout_s": 2,
        "retry": {
            "max_attempts": rng.randint(1, 5),
            "backoff_ms": rng.choice([100, 200, 500]),
            "backoff_multiplier": 2.0,
            "retry_on": [429, 502, 503, 504],
        },
        "rate_limit_per_min": rng.choice([60, 120, 600]),
        "cache_ttl_s": rng.choice([0, 60, 300]),
    }


def agent_config(n: int, rng: random.Random) -> dict:
    return {
        "model": rng.choice(["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet"]),
        "temperature": round(rng.uniform(0, 1), 2),
        "max_tokens": rng.choice([512, 1024, 2048]),
        "bench_index": n,
    }


def run_parallel(pool: ThreadPoolExecutor, fn, items) -> list:
    """Map fn over items on the pool; the first exception cancels the rest and is raised."""
    futures = [pool.submit(fn, item) for item in items]
    results = []
    try:
        for fut in futures:
            results.append(fut.result())
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080")
    ap.add_argument("--tools", type=int, default=2000)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--per-agent", type=int, default=10, help="distinct tools attached to each agent")
    ap.add_argument("--override-share", type=float, default=0.2,
                    help="share of attachments created with a config_override (default 0.2)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--verify", type=int, default=10, help="random agents to check after seeding")
    ap.add_argument("--seed", type=int, default=42, help="random seed (data is reproducible)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    args = ap.parse_args()

    if args.per_agent > args.tools:
        print("seed.py: --per-agent cannot exceed --tools", file=sys.stderr)
        return 1

    client = Client(args.base_url, args.timeout)
    rng = random.Random(args.seed)
    # Build every body up front from one seeded generator, so the data does not depend on
    # thread scheduling.
    tool_bodies = [
        {"name": f"tool-{n}", "type": "http", "config": tool_config(n, rng)}
        for n in range(1, args.tools + 1)
    ]
    agent_bodies = [
        {"name": f"agent-{n}", "type": "assistant", "config": agent_config(n, rng)}
        for n in range(1, args.agents + 1)
    ]
    config_sizes = [len(json.dumps(b["config"], separators=(",", ":"))) for b in tool_bodies]

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="seed") as pool:
            t = time.perf_counter()
            tools = run_parallel(pool, lambda b: client.expect("POST", "/api/v1/tools", b, (201,)),
                                 tool_bodies)
            timings["tools_s"] = time.perf_counter() - t
            tool_ids = sorted(tool["id"] for tool in tools)
            print(f"seed: {len(tool_ids)} tools in {timings['tools_s']:.1f} s", file=sys.stderr)

            t = time.perf_counter()
            agents = run_parallel(pool, lambda b: client.expect("POST", "/api/v1/agents", b, (201,)),
                                  agent_bodies)
            timings["agents_s"] = time.perf_counter() - t
            agent_ids = sorted(agent["id"] for agent in agents)
            print(f"seed: {len(agent_ids)} agents in {timings['agents_s']:.1f} s", file=sys.stderr)
            if agent_ids != list(range(1, args.agents + 1)):
                raise SeedError(
                    f"agent ids are not 1..{args.agents} (got {agent_ids[0]}..{agent_ids[-1]}); "
                    "the server must start on an empty database"
                )

            attachments = []  # (agent_id, tool_id, body or None)
            for agent_id in agent_ids:
                for tool_id in rng.sample(tool_ids, args.per_agent):
                    body = None
                    if rng.random() < args.override_share:
                        body = {"config_override": {
                            "timeout_s": rng.choice([20, 45, 60]),
                            "x_agent": f"agent-{agent_id}",
                        }}
                    attachments.append((agent_id, tool_id, body))

            t = time.perf_counter()
            run_parallel(
                pool,
                lambda a: client.expect("PUT", f"/api/v1/agents/{a[0]}/tools/{a[1]}", a[2], (201,)),
                attachments,
            )
            timings["attachments_s"] = time.perf_counter() - t
            overrides = sum(1 for a in attachments if a[2] is not None)
            print(f"seed: {len(attachments)} attachments ({overrides} with config_override) "
                  f"in {timings['attachments_s']:.1f} s", file=sys.stderr)

        # Verification, on this thread: random agents answer with exactly their tools.
        expected: dict[int, dict[int, dict | None]] = {}
        for agent_id, tool_id, body in attachments:
            expected.setdefault(agent_id, {})[tool_id] = body
        check_ids = rng.sample(agent_ids, min(args.verify, len(agent_ids)))
        for agent_id in check_ids:
            data = client.expect("GET", f"/api/v1/agents/{agent_id}/tools", None, (200,))
            if not isinstance(data, dict) or "items" not in data or "total" not in data:
                raise SeedError(f"agent {agent_id}: unexpected response shape {data!r:.200}")
            items = data["items"]
            if len(items) != args.per_agent or data["total"] != args.per_agent:
                raise SeedError(f"agent {agent_id}: {len(items)} items, total {data['total']}, "
                                f"expected {args.per_agent}")
            got = {item["id"] for item in items}
            if got != set(expected[agent_id]):
                raise SeedError(f"agent {agent_id}: tool ids {sorted(got)} != "
                                f"{sorted(expected[agent_id])}")
            for item in items:
                override = expected[agent_id][item["id"]]
                if override is not None:
                    eff = item.get("effective_config", {})
                    for k, v in override["config_override"].items():
                        if eff.get(k) != v:
                            raise SeedError(f"agent {agent_id} tool {item['id']}: effective_config"
                                            f"[{k!r}] = {eff.get(k)!r}, expected {v!r}")
        status, _ = client.request("GET", f"/api/v1/agents/{args.agents + 1}/tools")
        if status != 404:
            raise SeedError(f"agent {args.agents + 1} should not exist, got {status}")
        print(f"seed: verified {len(check_ids)} random agents ({args.per_agent} tools each)",
              file=sys.stderr)
    except (SeedError, OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        print(f"seed.py: FAILED: {e}", file=sys.stderr)
        return 1

    timings["total_s"] = time.perf_counter() - t_all
    summary = {
        "tools": len(tool_ids),
        "agents": len(agent_ids),
        "attachments": len(attachments),
        "attachments_with_override": overrides,
        "tool_config_bytes_mean": round(sum(config_sizes) / len(config_sizes)),
        "tool_config_bytes_min": min(config_sizes),
        "tool_config_bytes_max": max(config_sizes),
        "verified_agents": len(check_ids),
        "workers": args.workers,
        **{k: round(v, 2) for k, v in timings.items()},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
