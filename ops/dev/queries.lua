-- wrk script for ops/dev/load: POST /v1/search with the query bodies listed one per line in
-- $AMBER_LOAD_BODIES (cycled), and the key in $AMBER_LOAD_KEY.
local bodies = {}
local path = os.getenv("AMBER_LOAD_BODIES")
for line in io.lines(path) do bodies[#bodies + 1] = line end
local key = os.getenv("AMBER_LOAD_KEY") or ""
local counter = 0
request = function()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", "/v1/search", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("requests %d, errors %d (status %d), p50 %.2f ms, p99 %.2f ms, %.0f requests/s\n",
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests / (summary.duration / 1e6)))
end
