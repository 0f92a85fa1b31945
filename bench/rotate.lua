-- wrk script: every request presents the next of many valid keys, in rotation.
--   wrk ... --script rotate.lua URL -- KEYS_FILE SCOPE
-- KEYS_FILE holds one secret a line (empty: requests carry no key); SCOPE goes in
-- X-Required-Scope. At the end it prints one JSON line, which bench/run.py reads.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("number", counter)
end

function init(args)
  local file, scope = args[1], args[2]
  requests = {}
  if file and #file > 0 then
    for key in io.lines(file) do
      if #key > 0 then
        local headers = {["Authorization"] = "Bearer " .. key}
        if scope and #scope > 0 then headers["X-Required-Scope"] = scope end
        requests[#requests + 1] = wrk.format("GET", wrk.path, headers)
      end
    end
  else
    requests[1] = wrk.format("GET", wrk.path)
  end
  -- Threads start far apart in the rotation, so that they present different keys.
  position = ((number - 1) * 7919) % #requests
end

function request()
  position = position % #requests + 1
  return requests[position]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
