-- wrk script of benchmark (f): POST /trace/usage bodies rotating over a file of bodies (one
-- JSON body per line, TRACE_USAGE_BODIES) with the Basic auth header TRACE_USAGE_AUTH; each
-- connection starts at its own offset so the connections do not ask for the same trace.
local bodies = {}
local counter = 0

function init(args)
  for line in io.lines(os.getenv("TRACE_USAGE_BODIES")) do
    bodies[#bodies + 1] = line
  end
  counter = tonumber(args[1] or "0")
  wrk.method = "POST"
  wrk.headers["Authorization"] = os.getenv("TRACE_USAGE_AUTH")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept-Encoding"] = "identity"
end

function request()
  counter = counter + 1
  return wrk.format(nil, "/trace/usage", nil, bodies[(counter % #bodies) + 1])
end

function done(summary, latency, requests)
  io.write(string.format(
    "TRACE_USAGE_WRK requests=%d errors=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
