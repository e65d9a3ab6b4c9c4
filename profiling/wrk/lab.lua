-- wrk script for profiling/lab.py: the load of one experiment, and a JSON summary.
-- Every request is GET LAB_REPORT_PATH (a sales report), except a share of LAB_ORDER_SHARE
-- percent that place an order: POST /api/v1/orders with the API key LAB_TOKEN, one unit of
-- a product drawn from LAB_PRODUCT_IDS (comma-separated). done() prints one line
-- "WRK_JSON {...}" like profiling/wrk/bench.lua.
local report_path = os.getenv("LAB_REPORT_PATH") or "/api/v1/reports/sales"
local order_share = tonumber(os.getenv("LAB_ORDER_SHARE") or "0")
local order_headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. (os.getenv("LAB_TOKEN") or ""),
}
local product_ids = {}
for id in string.gmatch(os.getenv("LAB_PRODUCT_IDS") or "", "%d+") do
  product_ids[#product_ids + 1] = id
end

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  if order_share > 0 and #product_ids > 0 and math.random(100) <= order_share then
    local body = string.format(
      '{"customer_email": "lab%d@example.com", "items": [{"product_id": %s, "quantity": 1}]}',
      math.random(1000), product_ids[math.random(#product_ids)])
    return wrk.format("POST", "/api/v1/orders", order_headers, body)
  end
  return wrk.format("GET", report_path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end
