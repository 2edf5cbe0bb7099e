-- Begin a fill after a miss (never on a hit): one round trip.
-- KEYS: [1] value key, [2] lease key, [3..] fence keys (key, tags, heads, all).
-- ARGV: [1] lease token, [2] lease ttl (ms), [3] fresh: a value whose fresh_until
--       is after this time needs no load (the fleet's clock, seconds: ``now`` for a
--       miss, ``now + margin`` for a refresh ahead of expiry).
-- Reply: {1, value} if the value is fresh enough (no lease taken); else
--        {2 (lease acquired) | 3 (lease held by another), fence values...}.
-- A value starts with 'SKC1<fresh_until>|' (see scalekit/cache/redis.py).
local fresh = tonumber(ARGV[3])
local v = redis.call('GET', KEYS[1])
if v then
  local fresh_until = tonumber(string.match(v, '^SKC1([^|]*)|') or '')
  if fresh_until and fresh < fresh_until then
    return {1, v}
  end
end
local state = 3
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  state = 2
end
local out = {state}
for i = 3, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i]) or '0'
end
return out
