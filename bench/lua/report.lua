-- latchkey-bench, part of every wrk script: numbers each thread, sums the
-- per-thread status counters (kept by statuses.lua when it is loaded) and
-- prints one machine-readable line that latchkey-bench parses.
--
-- latchkey-bench writes a script as: a `BENCH = {...}` table, this file, and
-- for dynamic loads requests.lua (and statuses.lua when statuses are counted).
-- See bench/src/wrk.rs.

local threads = {}

function setup(thread)
   thread:set("thread_id", #threads)
   threads[#threads + 1] = thread
end

local status_names = { "s2xx", "s3xx", "s401", "s429", "s503", "sother" }

function done(summary, latency, requests)
   local counts = {}
   for _, name in ipairs(status_names) do
      counts[name] = 0
      for _, thread in ipairs(threads) do
         counts[name] = counts[name] + (tonumber(thread:get(name)) or 0)
      end
   end
   local e = summary.errors
   io.write(string.format(
      "LATCHKEY_BENCH requests=%.0f duration_us=%.0f connect=%.0f read=%.0f write=%.0f "
         .. "timeout=%.0f status=%.0f p50_us=%.0f p99_us=%.0f p999_us=%.0f counted=%d "
         .. "s2xx=%.0f s3xx=%.0f s401=%.0f s429=%.0f s503=%.0f sother=%.0f\n",
      summary.requests, summary.duration, e.connect, e.read, e.write,
      e.timeout, e.status,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
      (BENCH and BENCH.count_statuses) and 1 or 0,
      counts.s2xx, counts.s3xx, counts.s401, counts.s429, counts.s503, counts.sother))
end
