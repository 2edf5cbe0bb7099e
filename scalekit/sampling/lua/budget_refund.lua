-- Give one sampled unit back to a budget scope (a later stage refused the item).
-- KEYS[1]: the scope's key. ARGV: [1] now ('' = Redis TIME), [2] period.
-- Only the current window is touched; the key keeps its expiry. Reply: the new count.
-- (now: see _now.lua, prepended)
local idx = math.floor(now / tonumber(ARGV[2]))
local v = redis.call('GET', KEYS[1])
if not v then return -1 end
local sidx, sn, sc, sp = string.match(v, '^(%S+) (%S+) (%S+) (%S+)$')
if tonumber(sidx) ~= idx or tonumber(sc) < 1 then return -1 end
local c = tonumber(sc) - 1
redis.call('SET', KEYS[1], sidx .. ' ' .. sn .. ' ' .. c .. ' ' .. sp, 'KEEPTTL')
return c
