-- wrk script for profiling/bench.py: optional random ids in the path, optional pacing, and a
-- JSON summary.
-- WRK_PATH_TEMPLATE (e.g. /api/v1/products/{id}) with ids uniform in WRK_ID_MIN..WRK_ID_MAX;
-- without it wrk requests the URL's own path.
-- WRK_MEAN_DELAY_MS: each connection waits a random time (exponential, this mean) before each
-- request, so that requests arrive at about a chosen rate instead of as fast as answered
-- (wrk's delay() hook; wrk measures latency from the request's send, not the wait).
-- done() (common.lua) prints one line "WRK_JSON {...}".
local template = os.getenv("WRK_PATH_TEMPLATE")
local id_min = tonumber(os.getenv("WRK_ID_MIN") or "1")
local id_max = tonumber(os.getenv("WRK_ID_MAX") or "1")
local mean_delay_ms = tonumber(os.getenv("WRK_MEAN_DELAY_MS") or "")

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

if template then
  request = function()
    local path = template:gsub("{id}", tostring(math.random(id_min, id_max)))
    return wrk.format("GET", path)
  end
end

if mean_delay_ms then
  delay = function()
    -- wrk truncates the delay to whole milliseconds: +0.5 keeps the mean
    return -mean_delay_ms * math.log(1 - math.random()) + 0.5
  end
end
