-- wrk script for bench/run.py: pre-built requests, cycled; a JSON summary line at the end.
--
--   wrk ... -s bench/wrk.lua <url> -- <mode> <base path> <nkeys> [value file] [batch]
--
-- mode get:  GET  <base>/k<i>                                  (keys k0..k<nkeys-1>, seeded)
-- mode save: POST <base>  [{"key":"w<i>","value":<value>}]      (one item, no etag)
-- mode bulk: POST <base>/bulk {"keys":[<batch> keys k..]}
-- mode txn:  POST <base>/transaction {"operations":[<batch> upserts of t<i>]}
-- mode hello: GET <base>
-- Each wrk thread starts at its own offset, so threads do not hit the same keys in lockstep.

local reqs = {}
local n = 0
local i = 0

function init(args)
  local mode, base, nkeys = args[1], args[2], tonumber(args[3] or "1")
  local value = "null"
  if args[4] and args[4] ~= "" then
    local f = assert(io.open(args[4], "rb"))
    value = f:read("*a")
    f:close()
  end
  local batch = tonumber(args[5] or "10")
  local json = { ["Content-Type"] = "application/json" }
  if mode == "get" then
    for k = 0, nkeys - 1 do reqs[#reqs + 1] = wrk.format("GET", base .. "/k" .. k) end
  elseif mode == "hello" then
    reqs[1] = wrk.format("GET", base)
  elseif mode == "save" then
    for k = 0, nkeys - 1 do
      reqs[#reqs + 1] = wrk.format("POST", base, json,
        '[{"key":"w' .. k .. '","value":' .. value .. '}]')
    end
  elseif mode == "bulk" then
    for k = 0, nkeys - 1, batch do
      local ks = {}
      for j = 0, batch - 1 do ks[#ks + 1] = '"k' .. ((k + j) % nkeys) .. '"' end
      reqs[#reqs + 1] = wrk.format("POST", base .. "/bulk", json,
        '{"keys":[' .. table.concat(ks, ",") .. ']}')
    end
  elseif mode == "txn" then
    for k = 0, nkeys - 1, batch do
      local ops = {}
      for j = 0, batch - 1 do
        ops[#ops + 1] = '{"operation":"upsert","request":{"key":"t' .. ((k + j) % nkeys)
          .. '","value":' .. value .. '}}'
      end
      reqs[#reqs + 1] = wrk.format("POST", base .. "/transaction", json,
        '{"operations":[' .. table.concat(ops, ",") .. ']}')
    end
  else
    error("unknown mode " .. tostring(mode))
  end
  n = #reqs
  i = math.random(n) - 1
end

function request()
  i = i % n + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,' ..
    '"max_us":%.1f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
