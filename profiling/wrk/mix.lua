-- wrk script for `make profile --load wrk`: a mix of the shop's reads, as fast as they go.
-- Product ids are drawn from 1..WRK_ID_MAX (default 300, the demo shop's size).
local id_max = tonumber(os.getenv("WRK_ID_MAX") or "300")
local words = { "blend", "roast", "kit", "mug", "dark" }
local groupings = { "day", "product", "category" }

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
  local r = math.random(100)
  local path
  if r <= 45 then
    path = "/api/v1/products/" .. math.random(id_max)
  elseif r <= 75 then
    path = "/api/v1/products?limit=20&sort=price&category_id=" .. math.random(6)
  elseif r <= 90 then
    path = "/api/v1/products?q=" .. words[math.random(#words)]
  else
    path = "/api/v1/reports/sales?group_by=" .. groupings[math.random(#groupings)]
  end
  return wrk.format("GET", path)
end
