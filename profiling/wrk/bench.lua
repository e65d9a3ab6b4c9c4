-- wrk script for profiling/bench.py: optional random ids in the path, and a JSON summary.
-- WRK_PATH_TEMPLATE (e.g. /api/v1/products/{id}) with ids uniform in WRK_ID_MIN..WRK_ID_MAX;
-- without it wrk requests the URL's own path. done() (common.lua) prints one line
-- "WRK_JSON {...}".
local template = os.getenv("WRK_PATH_TEMPLATE")
local id_min = tonumber(os.getenv("WRK_ID_MIN") or "1")
local id_max = tonumber(os.getenv("WRK_ID_MAX") or "1")

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

if template then
  request = function()
    local path = template:gsub("{id}", tostring(math.random(id_min, id_max)))
    return wrk.format("GET", path)
  end
end
