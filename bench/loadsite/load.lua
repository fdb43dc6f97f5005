-- wrk script of bench/load.py. One script for every endpoint, steered by the environment:
--   LOAD_MODE     hello | naive | send | verify
--   LOAD_OFFSET   first number index of this run (each run gets numbers of its own)
--   LOAD_NUMBERS  verify: a file of E.164 numbers (one a line) that have a pending code
--   LOAD_THREADS  wrk's -t, so that thread t sends numbers t, t + T, t + 2T, ...
-- Every request carries a distinct, valid US number (send, naive, hello); verify cycles
-- through LOAD_NUMBERS with a wrong 8-digit code. done() prints one JSON line for load.py.

local mode = os.getenv("LOAD_MODE") or "hello"
local offset = tonumber(os.getenv("LOAD_OFFSET") or "0")
local nthreads = tonumber(os.getenv("LOAD_THREADS") or "1")
local paths = {
  hello = "/bench/hello/",
  naive = "/bench/naive-send/",
  send = "/api/phone/send-code/",
  verify = "/api/phone/verify-code/",
}
local path = paths[mode]
local headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
local areas = { 202, 212, 305, 312, 415, 617, 713, 206 }

-- The i-th of 8 * 600 * 10,000 distinct valid US numbers (the scheme of bench/bulk.py).
local function number(i)
  local line = i % 10000
  local exchange = 300 + math.floor(i / 10000) % 600
  local area = areas[math.floor(i / 6000000) % #areas + 1]
  return string.format("+1%d%d%04d", area, exchange, line)
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local numbers = {}
local counter = 0
-- Answers by kind, copied to the main state by done(): ok (the expected answer), and every
-- other status by number.
statuses = {}
expected = 0

function init(args)
  if mode == "verify" then
    local file = assert(io.open(os.getenv("LOAD_NUMBERS"), "r"))
    for line in file:lines() do
      if #line > 0 then table.insert(numbers, line) end
    end
    file:close()
    assert(#numbers > 0, "no numbers to verify")
  end
end

function request()
  local i = offset + counter * nthreads + tid
  counter = counter + 1
  local body
  if mode == "verify" then
    -- 8 digits: a plausible code (so the app asks TextFlow) that the 4-digit codes never match.
    body = string.format('{"phone_number": "%s", "code": "12345678"}', numbers[i % #numbers + 1])
  else
    body = string.format('{"phone_number": "%s"}', number(i))
  end
  return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
  local ok
  if mode == "verify" then
    ok = status == 400 and body ~= nil and string.find(body, '"invalid_code"', 1, true) ~= nil
  else
    ok = status == 200
  end
  if ok then
    expected = expected + 1
  else
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local ok, others = 0, {}
  for _, thread in ipairs(threads) do
    ok = ok + (thread:get("expected") or 0)
    local s = thread:get("statuses") or {}
    for k, v in pairs(s) do others[k] = (others[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(others) do table.insert(parts, string.format('"%s": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'LOADJSON {"requests": %d, "duration_us": %d, "expected": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d, '
      .. '"unexpected": {%s}}\n',
    summary.requests, summary.duration, ok, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.timeout, e.status, table.concat(parts, ", ")))
end
