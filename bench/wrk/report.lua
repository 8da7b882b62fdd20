-- wrk script (also loaded by pipeline.lua): prints, at the end, one
-- machine-readable line for bench/harness.py, then wrk's latency histogram.
--   BENCH {json: requests, errors, wrk's mean and percentiles (µs)}
--   HIST value:count value:count ...   (µs, only non-empty bins)
-- wrk's own percentiles include its coordinated-omission correction, which
-- adds synthetic samples with an interval computed from the response count;
-- with pipelining that interval is DEPTH times too small and the percentiles
-- come out as 0. The harness undoes the correction from HIST (it is a
-- deterministic function of the histogram, the run time, the response count
-- and the connection count), so it can report the samples wrk really took.
-- Fast path: read wrk's stats struct (wrk 4.x: count, limit, min, max,
-- data[]) through LuaJIT's FFI, O(range). The layout is checked against
-- what the Lua API reports before it is trusted.
local ok_ffi, ffi = pcall(require, "ffi")
if ok_ffi then
  pcall(ffi.cdef, [[
    typedef struct { uint64_t count, limit, min, max; uint64_t data[?]; } bench_wrk_stats;
  ]])
end

function dump_ffi(latency, parts)
  if not ok_ffi then return false end
  local ok, res = pcall(function()
    local pp = ffi.cast("bench_wrk_stats **", latency)
    local st = pp[0]
    local mn, mx = tonumber(st.min), tonumber(st.max)
    if mn ~= latency.min or mx ~= latency.max or tonumber(st.limit) <= mx then
      return false
    end
    local n = 0
    for v = mn, mx do
      local c = st.data[v]
      if c ~= 0 then
        n = n + 1
        parts[n] = string.format("%d:%d", v, tonumber(c))
      end
    end
    return n == #latency
  end)
  if not (ok and res) then
    for i = #parts, 1, -1 do parts[i] = nil end
    return false
  end
  return true
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"wrk_mean_us":%.1f,"wrk_stdev_us":%.1f,"wrk_min_us":%.1f,"wrk_max_us":%.1f,' ..
    '"wrk_p50_us":%.1f,"wrk_p90_us":%.1f,"wrk_p99_us":%.1f,"wrk_p999_us":%.1f,"bins":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), #latency))
  local parts = {}
  if not dump_ffi(latency, parts) then
    -- latency(i) walks the bins from min each time: O(bins * range). Skip
    -- the dump when that would take more than a few seconds.
    local bins = #latency
    if bins * (latency.max - latency.min + 1) > 4e9 then
      io.write("HIST SKIPPED\n")
      return
    end
    for i = 1, bins do
      local v, c = latency(i)
      parts[#parts + 1] = string.format("%d:%d", v, c)
    end
  end
  io.write("HIST " .. table.concat(parts, " ") .. "\n")
end
