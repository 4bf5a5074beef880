-- wrk script: GET the monitoring routes in turn, as a crowd of dashboards would.
-- At the end it prints one line of JSON for bench/monitoring_cost.py.

local paths = {"/stats", "/stats?hours=24", "/stats/series?every=day&hours=720"}
local counter = 0

function request()
  counter = counter + 1
  return wrk.format("GET", paths[counter % #paths + 1])
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
