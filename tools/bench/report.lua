-- wrk's end-of-run summary as one line of JSON, for the bench scripts that load this file.

-- A script may add fields: summary_extra() returns them as '"name": value' text.

function done(summary, latency, requests)
  local errors = summary.errors
  local extra = summary_extra and (", " .. summary_extra()) or ""
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "non_2xx": %d, "socket_errors": %d%s}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    errors.status, errors.connect + errors.read + errors.write + errors.timeout, extra))
end
