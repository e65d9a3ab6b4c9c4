-- wrk script for profiling/lab.py: the load of one experiment, and a JSON summary.
-- Every request is GET LAB_REPORT_PATH (a sales report), except a share of LAB_ORDER_SHARE
-- percent that place an order: POST /api/v1/orders, one unit of a product drawn from
-- LAB_PRODUCT_IDS (comma-separated). Both carry the API key LAB_TOKEN (customer and operator). done() (common.lua) prints one line
-- "WRK_JSON {...}".
local report_path = os.getenv("LAB_REPORT_PATH") or "/api/v1/reports/sales"
local order_share = tonumber(os.getenv("LAB_ORDER_SHARE") or "0")
local authorization = "Bearer " .. (os.getenv("LAB_TOKEN") or "")
local order_headers = {["Content-Type"] = "application/json", ["Authorization"] = authorization}
local report_headers = {["Authorization"] = authorization}
local product_ids = {}
for id in string.gmatch(os.getenv("LAB_PRODUCT_IDS") or "", "%d+") do
  product_ids[#product_ids + 1] = id
end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
  if order_share > 0 and #product_ids > 0 and math.random(100) <= order_share then
    local body = string.format(
      '{"customer_email": "lab%d@example.com", "items": [{"product_id": %s, "quantity": 1}]}',
      math.random(1000), product_ids[math.random(#product_ids)])
    return wrk.format("POST", "/api/v1/orders", order_headers, body)
  end
  return wrk.format("GET", report_path, report_headers)
end
