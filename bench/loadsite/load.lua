-- wrk script of bench/load.py. One script for every endpoint, steered by the environment:
--   LOAD_MODE     hello | naive | send | register | verify | pverify
--                 send: the app's send-code; register: the peer's (django-phone-verify);
--                 verify: the app's verify-code, pverify: the peer's verify, each with the
--                 right code of a pre-sent pool (LOAD_NUMBERS), each code once.
--   LOAD_OFFSET   first number index of this run (each run gets numbers of its own)
--   LOAD_NUMBERS  verify, pverify: a file of lines "number<TAB>handle<TAB>code" (handle: the
--                 app's verification_id or the peer's session_token), one per request
--   LOAD_RECORD   send, register: append every 200 answer's body, one a line, to this file
--                 (a file per wrk thread: LOAD_RECORD.<thread>), to build a pool from
--   LOAD_XFF      none | one | many: no X-Forwarded-For (the site sees 127.0.0.1), the same
--                 address on every request, or a distinct address (and /24) per request
--   LOAD_THREADS  wrk's -t, so that thread t sends numbers t, t + T, t + 2T, ...
-- Every send-like request carries a distinct, valid US number. done() prints one JSON line
-- for load.py.

local mode = os.getenv("LOAD_MODE") or "hello"
local offset = tonumber(os.getenv("LOAD_OFFSET") or "0")
local nthreads = tonumber(os.getenv("LOAD_THREADS") or "1")
local xff = os.getenv("LOAD_XFF") or "none"
local record_path = os.getenv("LOAD_RECORD")
local paths = {
  hello = "/bench/hello/",
  naive = "/bench/naive-send/",
  send = "/api/phone/send-code/",
  register = "/api/phone/register",
  verify = "/api/phone/verify-code/",
  pverify = "/api/phone/verify",
}
local path = assert(paths[mode], "unknown LOAD_MODE")
local pooled = mode == "verify" or mode == "pverify"
local headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
local areas = { 202, 212, 305, 312, 415, 617, 713, 206 }

-- The i-th of 8 * 600 * 10,000 distinct valid US numbers (the scheme of bench/bulk.py).
local function number(i)
  local line = i % 10000
  local exchange = 300 + math.floor(i / 10000) % 600
  local area = areas[math.floor(i / 6000000) % #areas + 1]
  return string.format("+1%d%d%04d", area, exchange, line)
end

-- The i-th of 200 * 250 * 250 client addresses, each in a /24 of its own.
local function address(i)
  return string.format("%d.%d.%d.%d", 11 + math.floor(i / 62500) % 200,
    math.floor(i / 250) % 250, i % 250, 7)
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local pool = {}
local counter = 0
local record = nil
-- Answers by kind, copied to the main state by done(): expected (the expected answer), every
-- other status by number, and overrun: requests past the end of the pool (an error: the pool
-- was too small for the run, and load.py sizes the next one larger).
statuses = {}
expected = 0
overrun = 0

function init(args)
  if pooled then
    local file = assert(io.open(os.getenv("LOAD_NUMBERS"), "r"))
    for line in file:lines() do
      local n, h, c = string.match(line, "^([^\t]+)\t([^\t]+)\t([^\t]+)$")
      if n then table.insert(pool, { n, h, c }) end
    end
    file:close()
    assert(#pool > 0, "no codes to verify")
  end
  if record_path and record_path ~= "" then
    record = assert(io.open(record_path .. "." .. tid, "a"))
    -- Flushed line by line: wrk never closes a thread's script state.
    record:setvbuf("line")
  end
  if xff == "one" then headers["X-Forwarded-For"] = "203.0.113.7" end
end

function request()
  local i = offset + counter * nthreads + tid
  counter = counter + 1
  if xff == "many" then headers["X-Forwarded-For"] = address(i) end
  local body
  if pooled then
    if i >= #pool then overrun = overrun + 1 end
    local entry = pool[i % #pool + 1]
    if mode == "verify" then
      body = string.format('{"phone_number": "%s", "verification_id": "%s", "code": "%s"}',
        entry[1], entry[2], entry[3])
    else
      body = string.format('{"phone_number": "%s", "session_token": "%s", "security_code": "%s"}',
        entry[1], entry[2], entry[3])
    end
  else
    body = string.format('{"phone_number": "%s"}', number(i))
  end
  return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
  if status == 200 then
    expected = expected + 1
    if record and body then record:write(body, "\n") end
  else
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local ok, past, others = 0, 0, {}
  for _, thread in ipairs(threads) do
    ok = ok + (thread:get("expected") or 0)
    past = past + (thread:get("overrun") or 0)
    local s = thread:get("statuses") or {}
    for k, v in pairs(s) do others[k] = (others[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(others) do table.insert(parts, string.format('"%s": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'LOADJSON {"requests": %d, "duration_us": %d, "expected": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d, '
      .. '"overrun": %d, "unexpected": {%s}}\n',
    summary.requests, summary.duration, ok, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.timeout, e.status, past,
    table.concat(parts, ", ")))
end
