-- Appended to every benchmark script. wrk calls done() once, after the run, in its main
-- Lua state; one line of JSON carries what bench/wrk.py reads (latencies in microseconds).
function done(summary, latency, requests)
  local errors = summary.errors
  local mean = 0
  if summary.requests > 0 then
    mean = latency.mean
  end
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.min, mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max
  ))
end
