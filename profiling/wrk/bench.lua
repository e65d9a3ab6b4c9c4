-- wrk script for profiling/bench.py: optional random ids in the path, and a JSON summary.
-- WRK_PATH_TEMPLATE (e.g. /api/v1/products/{id}) with ids uniform in WRK_ID_MIN..WRK_ID_MAX;
-- without it wrk requests the URL's own path. done() prints one line "WRK_JSON {...}".
local template = os.getenv("WRK_PATH_TEMPLATE")
local id_min = tonumber(os.getenv("WRK_ID_MIN") or "1")
local id_max = tonumber(os.getenv("WRK_ID_MAX") or "1")

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (id or 0))
end

if template then
  request = function()
    local path = template:gsub("{id}", tostring(math.random(id_min, id_max)))
    return wrk.format("GET", path)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
