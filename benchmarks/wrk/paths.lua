-- wrk: GET the paths listed one per line in the file named after `--`, in turn.
-- Used for the edge's throughput and, with the same list shape, the bare-Starlette ceiling,
-- so both pay the same per-request Lua cost. `done` prints one machine-readable line.

local paths = {}

function init(args)
   for line in io.lines(args[1]) do
      paths[#paths + 1] = line
   end
   assert(#paths > 0, "no paths in " .. args[1])
end

local i = 0

function request()
   i = i % #paths + 1
   return wrk.format("GET", paths[i])
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK-JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,'
         .. '"timeout":%d,"p50":%.1f,"p95":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f,"accepted":-1}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(95), latency:percentile(99),
      latency:percentile(99.9), latency.max))
end
