-- Invalidate keys: move their fences (fills in progress will not store), then drop
-- their values and leases (waiters stop waiting on a load that will not store).
-- KEYS: n (fence, value, lease) triples, then tag sets: each member's triple is
--       invalidated and the set dropped (on Redis Cluster none: the client takes
--       the members with tagset.lua and sends their triples slot by slot).
-- ARGV: [1] n, [2] fence ttl (ms), [3] the namespace's name head ('<ns>:{').
-- Reply: the number of values dropped.
local n = tonumber(ARGV[1])
local fence_ms = tonumber(ARGV[2])
local dropped = 0
local function drop(fence, value, lease)
  bump(fence, fence_ms)
  dropped = dropped + redis.call('DEL', value)
  redis.call('DEL', lease)
end
for i = 0, n - 1 do
  drop(KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3])
end
for i = 3 * n + 1, #KEYS do
  local members = redis.pcall('SMEMBERS', KEYS[i])
  if type(members) == 'table' and members.err == nil then
    for _, m in ipairs(members) do
      local fence, lease = derive(m, ARGV[3])
      if fence then
        drop(fence, m, lease)
      end
    end
  end
  redis.call('DEL', KEYS[i])
end
return dropped
