-- keys.lua — wrk script for bench/proxy-overhead.sh.
--
-- Rotates through N pre-generated S3 SigV4 requests, one API key each:
--   Authorization: AWS4-HMAC-SHA256 Credential=GK<24hex>/20261123/garage/s3/aws4_request,
--                  SignedHeaders=host;x-amz-date, Signature=<64hex>
-- (signatures do not verify: the origin is nginx `return 200`).
-- Usage: wrk ... -s bench/wrk/keys.lua URL -- KEYS_FILE N
--   KEYS_FILE: lines "KEY SIGNATURE TIER" (written by bench/lib.sh gen_keys); N: keys to use
--   (1 = every request carries the same key).
-- At the end prints one line "WRKJSON {...}" with the totals and latency percentiles (µs).

local reqs = {}
local nreq = 0
local idx = 0

function init(args)
  local path = args[1]
  local want = tonumber(args[2] or "1000")
  for line in io.lines(path) do
    local key, sig = line:match("^(%S+)%s+(%S+)")
    if key then
      local auth = "AWS4-HMAC-SHA256 Credential=" .. key ..
        "/20261123/garage/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=" .. sig
      nreq = nreq + 1
      reqs[nreq] = wrk.format("GET", "/bench/object", {
        ["Authorization"] = auth,
        ["x-amz-date"] = "20261123T000000Z",
        ["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD",
      })
      if nreq >= want then break end
    end
  end
  if nreq < want then
    error("keys.lua: " .. path .. " has " .. nreq .. " keys, " .. want .. " wanted")
  end
end

function request()
  idx = idx + 1
  if idx > nreq then idx = 1 end
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
