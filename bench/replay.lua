-- wrk script: replay a request file, one request per line, cycling through it.
--
--   wrk -t1 -c64 -d20s -s bench/replay.lua http://127.0.0.1:PORT -- FILE THREADS
--
-- A line is tab-separated: METHOD, PATH, BODY (may be empty), then any number of "Name: value"
-- headers. With THREADS > 1, thread i takes lines i, i+THREADS, … so no two threads send the same
-- request. Every request is formatted once, in init(), before wrk's clock starts. done() prints one
-- line "WRKJSON {…}" with the counts, the latency percentiles (µs) and the answers by status.

local threads = {}
local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

local function split(line)
   local out, start = {}, 1
   while true do
      local j = string.find(line, "\t", start, true)
      if not j then
         table.insert(out, string.sub(line, start))
         return out
      end
      table.insert(out, string.sub(line, start, j - 1))
      start = j + 1
   end
end

function init(args)
   local path = args[1]
   local nthreads = tonumber(args[2]) or 1
   reqs = {}
   sent = 0
   statuses = {}
   local i = 0
   for line in io.lines(path) do
      if line ~= "" then
         if i % nthreads == tid then
            local f = split(line)
            local headers = {}
            for k = 4, #f do
               local name, value = string.match(f[k], "^([^:]+):%s*(.*)$")
               if name then headers[name] = value end
            end
            local body = f[3]
            if body == "" then body = nil end
            reqs[#reqs + 1] = wrk.format(f[1], f[2], headers, body)
         end
         i = i + 1
      end
   end
   nreqs = #reqs
end

function request()
   local r = reqs[(sent % nreqs) + 1]
   sent = sent + 1
   return r
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local by_status, total_sent, total_lines = {}, 0, 0
   for _, t in ipairs(threads) do
      local s = t:get("statuses")
      if s then
         for code, n in pairs(s) do by_status[code] = (by_status[code] or 0) + n end
      end
      total_sent = total_sent + (t:get("sent") or 0)
      total_lines = total_lines + (t:get("nreqs") or 0)
   end
   local parts = {}
   for code, n in pairs(by_status) do table.insert(parts, string.format('"%d":%d', code, n)) end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"sent":%d,"lines":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d},"statuses":{%s}}\n',
      summary.requests, summary.duration, summary.bytes, total_sent, total_lines,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), table.concat(parts, ",")))
end
