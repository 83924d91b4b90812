-- wrk script: GET /api/v1/agents/{id}/tools with a uniformly random agent id in 1..N per request.
--
-- N comes from the environment variable GROUNDWORK_BENCH_AGENTS (default 1000).
-- Each wrk thread has its own Lua state; setup() numbers the threads so each one seeds
-- math.random differently.
-- done() prints one machine-readable line, prefixed "GWBENCH_JSON ", that the driver script
-- (tools_endpoint.sh) parses: requests, duration, rps, latency percentiles in microseconds,
-- and the error counters (errors.status counts responses with status > 399).

local max_id = tonumber(os.getenv("GROUNDWORK_BENCH_AGENTS") or "1000")
local thread_counter = 0

function setup(thread)
   thread_counter = thread_counter + 1
   thread:set("thread_index", thread_counter)
end

function init(args)
   local index = thread_index or 0
   -- os.time() has one-second resolution; mixing in the thread index and the address of a
   -- fresh table keeps threads (and runs started in the same second) on different sequences.
   local salt = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
   math.randomseed((os.time() * 1000 + index * 7919 + salt) % 2147483647)
   -- The first values after seeding are poorly mixed in some Lua versions: discard a few.
   for _ = 1, 10 do math.random() end
end

function request()
   return wrk.format("GET", "/api/v1/agents/" .. math.random(1, max_id) .. "/tools")
end

function done(summary, latency, requests)
   local duration_s = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      'GWBENCH_JSON {"requests": %d, "duration_s": %.3f, "rps": %.1f, "bytes": %d, ' ..
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}}\n',
      summary.requests, duration_s, summary.requests / duration_s, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean,
      e.connect, e.read, e.write, e.timeout, e.status))
end
