-- Begin a fill after a miss (never on a hit): one round trip.
-- KEYS: [1] value, [2] lease, [3] fence, [4..] tag sets the key joins (on Redis
--       Cluster none: the client joins them in their own slots, see tagset.lua).
-- ARGV: [1] lease token, [2] lease ttl (ms), [3] fresh: a value whose fresh_until
--       is after this time needs no load ('force': load whatever is stored),
--       [4] fence ttl (ms), [5] the first value of a new fence (a random integer).
-- Reply: {1, value} if the value is fresh enough (nothing else done); else
--        {2 (lease acquired) | 3 (lease held by another), the fence's value}.
-- The fence registers the fill: it exists (for at least the fence ttl) while the
-- fill may store, so every invalidation (key, tag, prefix, clear) finds and moves it.
-- A value starts with 'SKC2<fresh_until>|' (see scalekit/cache/_redis.py); anything
-- else (another writer, a wrong type) is simply not fresh: it is loaded and replaced.
local fence_ms = tonumber(ARGV[4])
if ARGV[3] ~= 'force' then
  local v = redis.pcall('GET', KEYS[1])
  if type(v) == 'string' then
    local fresh_until = tonumber(string.match(v, '^SKC2([^|]*)|') or '')
    if fresh_until and tonumber(ARGV[3]) < fresh_until then
      return {1, v}
    end
  end
end
local fence = redis.pcall('GET', KEYS[3])
if type(fence) ~= 'string' then
  if type(fence) == 'table' then
    redis.call('DEL', KEYS[3])
  end
  fence = ARGV[5]
  redis.call('SET', KEYS[3], fence, 'PX', fence_ms)
elseif redis.call('PTTL', KEYS[3]) < fence_ms then
  redis.call('PEXPIRE', KEYS[3], fence_ms)
end
local state = 3
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  state = 2
elseif type(redis.pcall('GET', KEYS[2])) == 'table' then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  state = 2
end
for i = 4, #KEYS do
  join(KEYS[i], KEYS[1], fence_ms)
end
return {state, fence}
