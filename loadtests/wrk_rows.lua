-- wrk script of the benchmark: POSTs iris rows, the same stream for every server.
--
--   wrk -t1 -c8 -d10s -s loadtests/wrk_rows.lua URL -- PROTOCOL ROWS MODE SEED
--
-- PROTOCOL  seed  {"input": [f1..f4]} (one row) or {"input": [[...], ...]}
--           v1    {"instances": [[...], ...]}
--           v2    {"inputs": [{"name": "input-0", "shape": [ROWS, 4],
--                   "datatype": "FP64", "data": [...]}]}
-- ROWS      rows per request
-- MODE      unique  every row of every request freshly drawn (cache misses)
--           repeat  one body sent again and again (cache hits once warm)
-- SEED      seed of the row stream: the same seed gives byte-identical bodies
--           in the same order on every server (LuaJIT's PRNG is deterministic)
--
-- At the end it prints one line "WRKJSON {...}" with totals and latency
-- percentiles in microseconds; bench.py parses it.

local ranges = { { 4.3, 7.9 }, { 2.0, 4.4 }, { 1.0, 6.9 }, { 0.1, 2.5 } }
local fmt, concat, random = string.format, table.concat, math.random

local protocol, nrows, unique
local fixed

local function row()
  local v = {}
  for i = 1, 4 do
    local r = ranges[i]
    v[i] = fmt("%.4f", r[1] + random() * (r[2] - r[1]))
  end
  return v
end

local function body()
  local rows = {}
  if protocol == "v2" then
    for i = 1, nrows do rows[i] = concat(row(), ",") end
    return fmt('{"inputs":[{"name":"input-0","shape":[%d,4],"datatype":"FP64","data":[%s]}]}',
      nrows, concat(rows, ","))
  end
  for i = 1, nrows do rows[i] = "[" .. concat(row(), ",") .. "]" end
  if protocol == "seed" then
    if nrows == 1 then return '{"input":' .. rows[1] .. "}" end
    return '{"input":[' .. concat(rows, ",") .. "]}"
  end
  return '{"instances":[' .. concat(rows, ",") .. "]}"
end

local thread_id = 0
function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  protocol = args[1] or "seed"
  nrows = tonumber(args[2] or "1")
  unique = (args[3] or "unique") == "unique"
  local seed = tonumber(args[4] or "1")
  math.randomseed(seed + 7919 * (tonumber(id) or 0))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if not unique then
    fixed = body()
    wrk.body = fixed
  end
end

function request()
  if unique then
    return wrk.format(nil, nil, nil, body())
  end
  return wrk.format(nil, nil, nil, fixed)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(fmt(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
