-- tollgate active-active: one tick of one instance (src/cluster/mod.rs). Its semantics are
-- src/limit/cluster.rs's MemStore::eval, line by line (tests/cluster.rs checks the two agree).
--
-- ARGV: instance id, now (the instance's cluster clock, ms), membership ttl (ms), number of
-- keys, then per key: subject, sustained window (ms), its sub-bucket width, burst window,
-- its sub-bucket width, then for each of the two windows: a number n and n pairs
-- (sub-bucket, this instance's admissions in it so far).
-- Per key and window, sub-bucket sb is the hash tg:<subject>:<1|2>:<sb> with field "t"
-- (every instance's admissions) and one field per instance (its own). An instance's field
-- is only ever raised to its count, and "t" by as much: a call run twice, or late, counts
-- nothing twice.
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

local function name(subject, i, sb)
  return 'tg:' .. subject .. ':' .. i .. ':' .. string.format('%d', sb)
end

local p = 5
for _ = 1, nkeys do
  local subject = ARGV[p]
  local w = { tonumber(ARGV[p + 1]), tonumber(ARGV[p + 3]) }
  local g = { tonumber(ARGV[p + 2]), tonumber(ARGV[p + 4]) }
  p = p + 5
  for i = 1, 2 do
    local n = tonumber(ARGV[p])
    p = p + 1
    for _ = 1, n do
      local sb = tonumber(ARGV[p])
      local v = tonumber(ARGV[p + 1])
      p = p + 2
      local left = (sb + 1) * g[i] + w[i] - now
      if left > 1 then
        local h = name(subject, i, sb)
        local cur = tonumber(redis.call('HGET', h, inst)) or 0
        if v > cur then
          redis.call('HINCRBY', h, 't', v - cur)
          redis.call('HSET', h, inst, v)
          redis.call('PEXPIRE', h, left + margin)
        end
      end
    end
  end
  for i = 1, 2 do
    local lo = math.floor(math.max(now + 1 - w[i], 0) / g[i])
    local hi = math.floor(now / g[i])
    local sum = 0
    for sb = lo, hi do
      local v = redis.call('HMGET', name(subject, i, sb), 't', inst)
      sum = sum + (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0)
    end
    out[#out + 1] = math.max(sum, 0)
  end
end
return out
