-- wrk: POST pre-signed Standard Webhooks (one per line: id, timestamp, signature, body; tab-separated)
-- from the file named after `--`. wrk cannot compute HMACs, so the runner signs them beforehand;
-- each is sent once. When the set runs out the thread stops, so no replay is ever counted as
-- an ingested event: `accepted` counts only 202 responses.

local reqs = {}
local threads = {}
accepted = 0
other = 0

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   for line in io.lines(args[1]) do
      local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/v1/webhooks/tracking", {
         ["Content-Type"] = "application/json",
         ["webhook-id"] = id,
         ["webhook-timestamp"] = ts,
         ["webhook-signature"] = sig,
      }, body)
   end
   assert(#reqs > 0, "no requests in " .. args[1])
end

local i = 0

function request()
   if i < #reqs then
      i = i + 1
   end
   return reqs[i]
end

local seen = 0

function response(status, headers, body)
   seen = seen + 1
   if status == 202 then
      accepted = accepted + 1
   else
      other = other + 1
   end
   if seen >= #reqs then
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local acc = 0
   for _, t in ipairs(threads) do
      acc = acc + t:get("accepted")
   end
   local e = summary.errors
   io.write(string.format(
      'WRK-JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,'
         .. '"timeout":%d,"p50":%.1f,"p95":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f,"accepted":%d}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(95), latency:percentile(99),
      latency:percentile(99.9), latency.max, acc))
end
