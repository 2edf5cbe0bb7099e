-- Invalidate: move fences, then drop values (and leases, so waiters stop waiting
-- on a load that will not store).
-- KEYS: fence keys to move, then value keys to drop, then tag set keys whose
--       members to drop.
-- ARGV: [1] number of fence keys, [2] number of value keys, [3] fence ttl (ms),
--       [4] lease key prefix (a member's lease is prefix .. member).
-- Reply: the number of values dropped.
local nf = tonumber(ARGV[1])
local nv = tonumber(ARGV[2])
local fence_ms = tonumber(ARGV[3])
local lease = ARGV[4]
for i = 1, nf do
  redis.call('INCR', KEYS[i])
  redis.call('PEXPIRE', KEYS[i], fence_ms)
end
local dropped = 0
local function drop(k)
  dropped = dropped + redis.call('DEL', k)
  redis.call('DEL', lease .. k)
end
for i = nf + 1, nf + nv do
  drop(KEYS[i])
end
for i = nf + nv + 1, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  for _, m in ipairs(members) do
    drop(m)
  end
  redis.call('DEL', KEYS[i])
end
return dropped
