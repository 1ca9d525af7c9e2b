-- tollgate active-active: one tick of one instance (src/cluster/mod.rs). Its semantics are
-- src/limit/cluster.rs's MemStore::eval, step by step (tests/cluster.rs checks the two agree).
--
-- ARGV: instance id, now (the instance's cluster clock, ms), membership ttl (ms), number of
-- keys, then per key: subject, sustained window (ms), its sub-bucket width, burst window,
-- its sub-bucket width, then for each of the two windows: a number n and n pairs
-- (sub-bucket, this instance's admissions in it so far).
-- Per key and window one hash, tg:<subject>:<1|2>, with field "<sb>" (every instance's
-- admissions in sub-bucket sb) and "<sb>:<instance>" (one instance's). An instance's field is
-- only ever raised to its count, and the total by as much: a call run twice, or late, counts
-- nothing twice. Fields of sub-buckets that left the window are deleted; the hash expires a
-- second after its newest sub-bucket leaves the window.
-- Returns: live members, then per key the others' admissions in its two trailing windows
-- (every sub-bucket that intersects the window, total minus this instance's own).
local inst = ARGV[1]
local now = tonumber(ARGV[2])
local alive_ttl = tonumber(ARGV[3])
local nkeys = tonumber(ARGV[4])
local margin = 1000

redis.call('ZADD', 'tg:members', now, inst)
redis.call('ZREMRANGEBYSCORE', 'tg:members', '-inf', '(' .. string.format('%d', now - alive_ttl))
local out = { redis.call('ZCARD', 'tg:members') }

local suffix = ':' .. inst
local p = 5
for _ = 1, nkeys do
  local subject = ARGV[p]
  local w = { tonumber(ARGV[p + 1]), tonumber(ARGV[p + 3]) }
  local g = { tonumber(ARGV[p + 2]), tonumber(ARGV[p + 4]) }
  p = p + 5
  local others = {}
  for i = 1, 2 do
    local h = 'tg:' .. subject .. ':' .. i
    local lo = math.floor(math.max(now + 1 - w[i], 0) / g[i])
    local f = {}
    local kv = redis.call('HGETALL', h)
    for j = 1, #kv, 2 do
      f[kv[j]] = tonumber(kv[j + 1])
    end
    local n = tonumber(ARGV[p])
    p = p + 1
    local newest = -1
    for _ = 1, n do
      local sb = tonumber(ARGV[p])
      local v = tonumber(ARGV[p + 1])
      p = p + 2
      if sb >= lo then
        local t = string.format('%d', sb)
        local cur = f[t .. suffix] or 0
        if v > cur then
          redis.call('HINCRBY', h, t, v - cur)
          redis.call('HSET', h, t .. suffix, v)
          f[t] = (f[t] or 0) + v - cur
          f[t .. suffix] = v
          if sb > newest then newest = sb end
        end
      end
    end
    local sum, gone = 0, {}
    for field, v in pairs(f) do
      local colon = string.find(field, ':', 1, true)
      local sb = tonumber(colon and string.sub(field, 1, colon - 1) or field)
      if sb < lo then
        gone[#gone + 1] = field
      elseif not colon then
        sum = sum + v - (f[field .. suffix] or 0)
      end
    end
    if #gone > 0 then
      redis.call('HDEL', h, unpack(gone))
    end
    if newest >= 0 then
      local left = (newest + 1) * g[i] + w[i] - now
      if redis.call('PTTL', h) < left + margin then
        redis.call('PEXPIRE', h, left + margin)
      end
    end
    others[i] = math.max(sum, 0)
  end
  out[#out + 1] = others[1]
  out[#out + 1] = others[2]
end
return out
